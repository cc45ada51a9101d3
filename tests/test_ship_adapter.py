"""tools/ship_default_adapter.py: the rank reduction that keeps the shipped files small, and the shipped files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "affectllm" / "data" / "adapters" / "gemma3-270m-ov"


@pytest.fixture(scope="module")
def ship() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ship_default_adapter", ROOT / "tools" / "ship_default_adapter.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lora(rank: int = 6, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for module, (d_out, d_in) in {"q_proj": (24, 16), "down_proj": (16, 40)}.items():
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        weights[f"{prefix}.lora_A.weight"] = torch.randn(rank, d_in, generator=generator, dtype=torch.float64)
        weights[f"{prefix}.lora_B.weight"] = torch.randn(
            d_out, rank, generator=generator, dtype=torch.float64
        )
    return weights, {"r": rank, "lora_alpha": 12, "rank_pattern": {}, "use_rslora": False}


def _updates(weights: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """What the model adds to each projection: (alpha / r) B @ A."""
    scale = config["lora_alpha"] / config["r"]
    return {
        k.split(".lora_A.")[0]: scale * weights[k.replace(".lora_A.", ".lora_B.")] @ weights[k]
        for k in weights
        if ".lora_A." in k
    }


def test_reduce_rank_at_the_full_rank_changes_no_update(ship: ModuleType) -> None:
    weights, config = _lora()
    reduced, new_config, kept = ship.reduce_rank(weights, config, rank=6)
    assert new_config["r"] == 6 and new_config["lora_alpha"] == pytest.approx(12)
    for name, update in _updates(weights, config).items():
        assert torch.allclose(_updates(reduced, new_config)[name], update, atol=1e-9)
    assert kept["energy_kept_min"] == pytest.approx(1.0)


def test_reduce_rank_keeps_the_best_low_rank_update_at_the_same_scale(ship: ModuleType) -> None:
    weights, config = _lora()
    reduced, new_config, kept = ship.reduce_rank(weights, config, rank=2)
    # alpha follows r, so (alpha / r) stays 2: the reduced factors carry the update at the trained scale.
    assert new_config["r"] == 2 and new_config["lora_alpha"] / new_config["r"] == pytest.approx(2.0)
    assert reduced[next(k for k in reduced if ".lora_A." in k)].shape[0] == 2
    shares = []
    for name, update in _updates(weights, config).items():
        s = torch.linalg.svdvals(update)
        error = torch.linalg.norm(_updates(reduced, new_config)[name] - update)
        # Eckart-Young: the error of the best rank-2 approximation is the norm of the dropped singular values.
        assert float(error) == pytest.approx(float(s[2:].square().sum().sqrt()), rel=1e-9)
        shares.append(float(s[:2].square().sum() / s.square().sum()))
    assert kept["energy_kept_min"] == pytest.approx(min(shares))
    assert kept["energy_kept_mean"] == pytest.approx(sum(shares) / len(shares))


def _output_error(update: torch.Tensor, approx: torch.Tensor, moment: torch.Tensor) -> float:
    """E‖(ΔW − ΔW')x‖² for inputs with second moment E[x xᵀ] = moment."""
    diff = update - approx
    return float(torch.trace(diff @ moment @ diff.T))


def test_whitened_reduction_keeps_the_outputs_better_than_the_weights_svd(ship: ModuleType) -> None:
    weights, config = _lora()
    generator = torch.Generator().manual_seed(3)
    moments = {}
    for key in (k for k in weights if ".lora_A." in k):
        d_in = weights[key].shape[1]
        # Inputs that mostly live in a few directions, as a transformer's activations do.
        basis = torch.linalg.qr(torch.randn(d_in, d_in, generator=generator, dtype=torch.float64))[0]
        spread = torch.logspace(2, -3, d_in, dtype=torch.float64)
        moments[key.split(".lora_A.")[0]] = basis @ torch.diag(spread) @ basis.T
    plain, plain_config, _ = ship.reduce_rank(weights, config, rank=2)
    whitened, white_config, kept = ship.reduce_rank(weights, config, rank=2, input_moments=moments)
    assert white_config == plain_config
    for name, update in _updates(weights, config).items():
        white = _output_error(update, _updates(whitened, white_config)[name], moments[name])
        flat = _output_error(update, _updates(plain, plain_config)[name], moments[name])
        assert white < flat  # the whitened update is optimal for these inputs; the weights SVD is not
    assert 0 < kept["energy_kept_min"] <= kept["energy_kept_mean"] <= 1
    # Isotropic inputs: whitening changes nothing.
    isotropic = {name: torch.eye(len(m), dtype=torch.float64) for name, m in moments.items()}
    same, _, _ = ship.reduce_rank(weights, config, rank=2, input_moments=isotropic)
    for name, update in _updates(plain, plain_config).items():
        assert torch.allclose(_updates(same, plain_config)[name], update, atol=1e-9)
    with pytest.raises(ValueError, match="no input statistics"):
        ship.reduce_rank(weights, config, rank=2, input_moments={})


def test_reduce_rank_refuses_what_it_cannot_reduce_exactly(ship: ModuleType) -> None:
    weights, config = _lora()
    with pytest.raises(ValueError, match="above the adapter's own rank"):
        ship.reduce_rank(weights, config, rank=8)
    with pytest.raises(ValueError, match="rank_pattern"):
        ship.reduce_rank(weights, {**config, "rank_pattern": {"q_proj": 4}}, rank=2)
    with pytest.raises(ValueError, match="use_rslora"):
        ship.reduce_rank(weights, {**config, "use_rslora": True}, rank=2)


def test_every_shipped_adapter_file_fits_the_file_limit_and_the_config_rank(ship: ModuleType) -> None:
    from safetensors import safe_open

    for path in SHIPPED.iterdir():
        assert path.stat().st_size <= ship.FILE_LIMIT, path.name
    config = json.loads((SHIPPED / "adapter_config.json").read_text(encoding="utf-8"))
    with safe_open(str(SHIPPED / "adapter_model.safetensors"), "pt") as weights:
        names = weights.keys()  # a safetensors file handle is not iterable itself
        ranks = {weights.get_slice(k).get_shape()[0] for k in names if ".lora_A." in k}
    assert ranks == {config["r"]}
