"""``affectllm ui``: a local web page for opening a clip, seeing its evidence on a timeline and asking about it.

The page is one HTML file with plain JavaScript (``static/``), served by the standard library's threaded HTTP
server (``server.py``), so the ``ui`` extra adds only matplotlib for the timeline; docs/ui.md says why this
and not gradio. ``workbench.py`` holds what the page works on (opened clips, their chat sessions, the model),
``uploads.py`` the private folder uploads go to, ``events.py`` how a long step reports progress to the page.
"""
