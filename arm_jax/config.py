"""Frozen, validated configs loaded from `arm_jax/configs/*.yaml` (the repository's `configs`
link) with `key=value` overrides.

Every field declares its type and, where it matters, its allowed range. Loading
checks unknown keys, types and ranges once and produces read-only dataclasses;
the error names the key, the value and what is allowed.

Features are global (every tier must accept the same requests, because the
router picks the tier per request); tiers differ only in model size.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range."""


MAX_RANK_LOSS_CANDIDATES = 4096   # train.batch_size x candidates with the pairwise loss on


def check_rank_loss_batch(weight: float, requests: int, candidates: int, what: str) -> None:
    """ConfigError when `train.rank_loss_weight` is on and a batch of `requests` x
    `candidates` (`what` names them) holds more than MAX_RANK_LOSS_CANDIDATES: the pairwise
    loss's memory grows as their square."""
    n = requests * candidates
    if weight > 0 and n > MAX_RANK_LOSS_CANDIDATES:
        raise ConfigError(f"train.rank_loss_weight={weight} pairs every candidate of a batch: "
                          f"{what} = {n} must be <= {MAX_RANK_LOSS_CANDIDATES}")


def _f(default: Any, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, doc: str = "") -> Any:
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_fields(obj: Any, prefix: str) -> None:
    """Type, range and choice checks of every field, as `from_dict` makes for YAML and
    overrides, for a config built in Python (directly or by `dataclasses.replace`), which
    otherwise failed later as a KeyError or ZeroDivisionError inside the model, or not at
    all (`dropout=1.5`). The error names the key, the value and what is allowed; a value
    the loader would convert (an int for a float, a list for a tuple) is stored converted."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        checked = _coerce(hints[f.name], value, key, f.metadata)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


@dataclass(frozen=True)
class FeaturesConfig:
    """The request schema shared by every tier."""

    req_sparse_fields: int = _f(8, 1, 256, doc="request sparse id fields")
    req_dense_features: int = _f(16, 1, 4096, doc="request dense features")
    cand_sparse_fields: int = _f(8, 1, 256, doc="candidate sparse id fields")
    cand_dense_features: int = _f(8, 1, 4096, doc="candidate dense features")
    num_action_types: int = _f(4, 1, 256, doc="distinct history action types")
    max_history: int = _f(1024, 1, 65536, doc="longest history a request may carry")
    max_candidates: int = _f(1024, 1, 65536, doc="most candidates a request may carry")
    sparse_hash_size: int = _f(20011, 2, 2**31 - 1, doc="rows per sparse field table")
    item_hash_size: int = _f(50021, 2, 2**31 - 1, doc="rows of the history item table")
    time_buckets: int = _f(24, 2, 64, doc="log2 buckets of event age in seconds")
    tasks: tuple[str, ...] = _f(("click", "conversion"), doc="prediction tasks")
    history_side_fields: tuple[int, ...] = _f(
        (1, 2), doc="candidate sparse fields every history event also carries for its item "
                    "(hist_side columns, e.g. advertiser and topic): the categories history "
                    "matching compares")

    def __post_init__(self) -> None:
        _check_fields(self, "features")
        tasks = self.tasks
        if not tasks or len(set(tasks)) != len(tasks) or not all(tasks):
            raise ConfigError(
                f"features.tasks={list(tasks)} must be a non-empty list of distinct, non-empty "
                "task names (one output and one label column each)")
        side = self.history_side_fields
        if len(set(side)) != len(side) or any(not 0 <= j < self.cand_sparse_fields for j in side):
            raise ConfigError(
                f"features.history_side_fields={list(side)} must be distinct candidate field "
                f"indices in [0, cand_sparse_fields={self.cand_sparse_fields})")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of one tier's model (the same code for every tier)."""

    d_model: int = _f(128, 4, 8192)
    history_len: int = _f(1024, 1, 65536, doc="L: events the tier reads")
    encoder_layers: int = _f(2, 0, 64)
    encoder_heads: int = _f(4, 1, 64)
    encoder_mlp_ratio: int = _f(4, 1, 16)
    summary_tokens: int = _f(4, 0, 64)
    summary_history: int = _f(
        0, 0, 65536, doc="events the summary tokens pool over, most recent first (0: all L); "
                         "target attention and history match still read all L")
    target_attention: bool = _f(True)
    share_item_embedding: bool = _f(
        True, doc="look the candidate's item id (its first sparse field) up in the history's "
                  "item table too, as an extra token and target-attention query input")
    history_match: bool = _f(
        True, doc="a history-match token per candidate: how much of the history shares its "
                  "item id and each history side field (soft, cosine of the shared embeddings)")
    target_heads: int = _f(4, 1, 64)
    age_bias_slope: float = _f(
        0.0, 0.0, 10.0, doc="a learned per-head recency bias in every attention over the "
                            "history, starting at -slope logits per doubling of an event's "
                            "age (0: none, no parameters)")
    rank_bias_slope: float = _f(
        0.0, 0.0, 10.0, doc="the same, by an event's rank in the history (0: the most recent) "
                            "instead of its age: -slope logits per doubling of the rank, a "
                            "recency prior that still orders events sharing one time, as in "
                            "a burst of ratings (0: none, no parameters)")
    wukong_layers: int = _f(4, 1, 64)
    fm_tokens: int = _f(16, 1, 1024, doc="n_F")
    lcb_tokens: int = _f(16, 1, 1024, doc="n_L")
    fm_rank: int = _f(24, 1, 1024, doc="FM projection rank k")
    mlp_hidden: int = _f(512, 1, 65536)
    head_hidden: int = _f(256, 1, 65536)
    use_bias: bool = _f(False, doc="bias terms in the interaction stack ('turbo' drops them)")
    activation: str = _f(
        "relu", choices=("relu", "gelu", "silu"),
        doc="nonlinearity of the Wukong MLPs and the head (gelu/silu have no dead zone: a "
            "ReLU head whose units all stop firing stops learning for good)")
    dropout: float = _f(0.0, 0.0, 0.9, doc="training-only dropout rate on the encoded history, "
                                           "the interaction stack's input tokens and the head "
                                           "(0: off; serving never drops)")
    dtype: str = _f("float32", choices=("float32", "bfloat16"), doc="compute dtype")
    param_dtype: str = _f("float32", choices=("float32", "bfloat16"))
    kernel_impl: str = _f("auto", choices=("auto", "xla", "pallas"),
                          doc="target-attention implementation")

    def __post_init__(self) -> None:
        _check_fields(self, "model")
        if self.summary_history > self.history_len:
            raise ConfigError(
                f"model.summary_history={self.summary_history} must be <= "
                f"model.history_len={self.history_len} (0: all of it)")
        if self.d_model % self.encoder_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} must be divisible by "
                f"model.encoder_heads={self.encoder_heads}")
        if self.d_model % self.target_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} must be divisible by "
                f"model.target_heads={self.target_heads}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data sizes for `arm-jax train`."""

    steps: int = _f(600, 1, 10**9)
    batch_size: int = _f(64, 1, 1 << 20, doc="requests per step")
    candidates: int = _f(16, 1, 65536, doc="candidates per training request")
    learning_rate: float = _f(2e-3, 1e-7, 10.0)
    weight_decay: float = _f(1e-5, 0.0, 1.0)
    embedding_lr_scale: float = _f(1.0, 1e-3, 1e3, doc="learning-rate multiplier of tables")
    warmup_steps: int = _f(50, 0, 10**9)
    ema_decay: float = _f(0.0, 0.0, 0.99999,
                          doc="decay of an exponential moving average of the weights, which "
                              "are then what is evaluated, checkpointed and exported (0: off)")
    history_crop: float = _f(
        0.0, 0.0, 1.0, doc="probability that a training request's history is cut to a "
                           "uniformly drawn length in [0, its length], keeping the most "
                           "recent events: a regulariser against leaning on the long tail "
                           "of histories (0: off; evaluation and serving never crop)")
    masked_actions: float = _f(
        0.0, 0.0, 0.9, doc="share of history events a training step shows without their "
                           "action, which the encoder must then predict (a self-supervised "
                           "label per event, BERT's masked tokens applied to actions); the "
                           "ranking loss sees the same view (0: off; evaluation and serving "
                           "always see every action)")
    masked_action_weight: float = _f(1.0, 0.0, 100.0,
                                     doc="weight of that task's cross-entropy in the loss")
    rank_loss_weight: float = _f(
        0.0, 0.0, 100.0, doc="weight of a pairwise ranking loss over every pair of candidates "
                             "in a batch, across requests too (RankNet's logistic loss, an "
                             "AUC surrogate), added to the cross-entropy (0: off); memory "
                             "grows as (requests x candidates per batch)^2, so their product "
                             f"must be <= {MAX_RANK_LOSS_CANDIDATES} when it is on")
    seed: int = _f(0, 0, 2**31 - 1)
    train_requests: int = _f(20000, 1, 10**9, doc="synthetic training requests")
    eval_requests: int = _f(4000, 1, 10**9, doc="synthetic held-out requests")
    num_users: int = _f(6000, 1, 10**9)
    log_every: int = _f(50, 1, 10**9)

    def __post_init__(self) -> None:
        _check_fields(self, "train")
        check_rank_loss_batch(self.rank_loss_weight, self.batch_size, self.candidates,
                              f"train.batch_size={self.batch_size} x train.candidates="
                              f"{self.candidates}")


@dataclass(frozen=True)
class ServingConfig:
    """Shape buckets compiled ahead of time for a tier."""

    batch_buckets: tuple[int, ...] = _f((1, 4, 16))
    candidate_buckets: tuple[int, ...] = _f((16, 64, 256, 1024))
    deadline_ms: float = _f(200.0, 1.0, 60000.0)

    def __post_init__(self) -> None:
        _check_fields(self, "serving")
        for name in ("batch_buckets", "candidate_buckets"):
            vals = getattr(self, name)
            if not vals or list(vals) != sorted(set(vals)) or min(vals) < 1:
                raise ConfigError(
                    f"serving.{name}={list(vals)} must be a non-empty, strictly increasing "
                    "list of positive integers")


QUANT_FORMATS = ("float32", "bfloat16", "int8", "float8_e4m3fn")


@dataclass(frozen=True)
class LayerQuant:
    """One dense layer's precision, with the measurements that chose it."""

    layer: str = _f("", doc="layer path, e.g. 'wukong/0/mlp_in'")
    format: str = _f("float32", choices=QUANT_FORMATS)
    sensitivity: float = _f(0.0, -1.0, 1.0, doc="held-out AUC drop with only this layer quantized")
    speedup: float = _f(1.0, 0.0, 1e3, doc="measured matmul speed-up at serving shapes")
    act_scale: float = _f(1.0, 0.0, 1e30, doc="float8: calibrated input scale (amax / 448)")
    reason: str = _f("", doc="why this format (chosen / no gain on this backend / ...)")

    def __post_init__(self) -> None:
        _check_fields(self, f"quant.layers[{self.layer!r}]")


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization plan (`arm-jax quantize` writes it; empty = all float32)."""

    layers: tuple[LayerQuant, ...] = _f(())
    budget_auc: float = _f(0.001, 0.0, 1.0, doc="largest allowed held-out AUC drop")
    backend: str = _f("", doc="platform the speed-ups were measured on")
    holdout_auc_drop: float = _f(0.0, -1.0, 1.0, doc="whole model, held-out set (measured)")
    model_speedup: float = _f(1.0, 0.0, 1e3, doc="whole model at the timed serving shape "
                                                 "(measured; 1.0 when nothing is quantized)")

    def __post_init__(self) -> None:
        _check_fields(self, "quant")


@dataclass(frozen=True)
class TierConfig:
    """One routing tier: a name, its model sizes, how to train it, its buckets."""

    name: str = _f("large")
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def __post_init__(self) -> None:
        _check_fields(self, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars (what `tier_from_dict` and `from_dict` read back)."""
        return _to_plain(self)


# ---------------------------------------------------------------- loading

def default_config_dir() -> Path:
    """`$ARM_JAX_CONFIG_DIR`, else the configs shipped inside the package (`arm_jax/configs`,
    also reached through the repository's top-level `configs` link)."""
    env = os.environ.get("ARM_JAX_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "configs"


def _config_dir(config_dir: str | os.PathLike | None) -> Path:
    """`config_dir` as a Path (a str is one too), or the default when None."""
    return default_config_dir() if config_dir is None else Path(config_dir)


def tier_names(config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the bundled (or `config_dir`'s) tier configs, sorted."""
    d = _config_dir(config_dir) / "tiers"
    return sorted(p.stem for p in d.glob("*.yaml"))


def _check_overrides(overrides: Any) -> None:
    """ConfigError unless `overrides` is a list (or tuple) of strings: one string was
    iterated character by character ("override 'm' must look like key=value")."""
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides={overrides!r}: must be a list of key=value strings "
                          f"(e.g. ['model.d_model=64']), not a {type(overrides).__name__}")
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"overrides: {item!r} is a {type(item).__name__}; each override "
                              "must be a key=value string (e.g. 'model.d_model=64')")


def load_tier(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
              config_dir: str | os.PathLike | None = None) -> TierConfig:
    """Load a tier by name (`configs/tiers/NAME.yaml`) or path, plus the features
    config, then apply `section.key=value` overrides; validate everything."""
    _check_overrides(overrides)
    cdir = _config_dir(config_dir)
    path = Path(name_or_path)
    if not path.suffix:
        path = cdir / "tiers" / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"tier '{name_or_path}' not found; known tiers: {', '.join(tier_names(cdir))}")
    raw = _read_yaml(path)
    features_raw = _read_yaml(cdir / "features.yaml") if (cdir / "features.yaml").exists() else {}
    raw.setdefault("name", path.stem)
    merged_features = dict(features_raw)
    own_features = raw.pop("features", {}) or {}
    if not isinstance(own_features, dict):
        raise ConfigError(f"{path}: features: expected a mapping, got "
                          f"{type(own_features).__name__} {own_features!r}")
    merged_features.update(own_features)
    raw["features"] = merged_features
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(TierConfig, raw)


def load_features(overrides: list[str] | tuple[str, ...] = (),
                  config_dir: str | os.PathLike | None = None) -> FeaturesConfig:
    """features.yaml with `key=value` overrides (the `features.` prefix is optional)."""
    _check_overrides(overrides)
    cdir = _config_dir(config_dir)
    raw = _read_yaml(cdir / "features.yaml")
    for item in overrides:
        _apply_override({"features": raw}, item if item.startswith("features.")
                        else f"features.{item}")
    return from_dict(FeaturesConfig, raw, prefix="features")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. model.d_model=64)")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{p}' is not a section")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges."""
    where = prefix or cls.__name__
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key '{key}'; allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, key, fields[name].metadata)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(f"{where}: {e}") from None


def _coerce(tp: Any, value: Any, key: str, meta: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        # an instance was checked when it was built
        return value if isinstance(value, tp) else from_dict(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [v for v in str(value).split(",") if v != ""] if isinstance(value, str) else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        out = tuple(_coerce(inner, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            digits = value.strip().lstrip("-") if isinstance(value, str) else ""
            if digits.isascii() and digits.isdigit():   # not '²': isdigit, but int() refuses
                value = int(value)
            else:
                raise ConfigError(f"{key}={value!r}: expected an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={value!r}: expected a number") from None
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
    lo, hi, choices = (meta or {}).get("lo"), (meta or {}).get("hi"), (meta or {}).get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(str, choices))}")
    # `not lo <= value`, not `value < lo`: nan compares false either way and must fail
    if lo is not None and not lo <= value or hi is not None and not value <= hi:
        raise ConfigError(f"{key}={value!r} is out of range: allowed {lo}..{hi}")
    return value


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def tier_from_dict(raw: dict[str, Any]) -> TierConfig:
    """Rebuild a TierConfig from `TierConfig.to_dict()` output (manifests, checkpoints)."""
    return from_dict(TierConfig, raw)


__all__ = [
    "ConfigError", "FeaturesConfig", "ModelConfig", "TrainConfig", "ServingConfig",
    "TierConfig", "LayerQuant", "QuantConfig", "QUANT_FORMATS", "load_tier", "load_features", "tier_names", "tier_from_dict",
    "default_config_dir", "from_dict",
]
