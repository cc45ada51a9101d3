"""affectllm: LLM-based, explainable emotion reasoning over textualized multimodal evidence."""

__version__ = "0.1.0"
