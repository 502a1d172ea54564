"""RunConfig: YAML + `--set` overrides, coercion, validation messages, component options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import pytest
import yaml

from arena.config import dump_yaml, load_run_config, run_config_from_dict
from arena.errors import ArenaError, ConfigError

REPO = Path(__file__).resolve().parents[1]

BASE = ["model.name=tiny", "target.name=arith"]


def _yaml(tmp_path: Path, text: str) -> str:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_with_overrides_and_coercion(tmp_path):
    path = _yaml(tmp_path, """
model: tiny
method: {name: lora, rank: 4, alpha: 8}
target: {name: arith, n_train: 100}
train:
  steps: 7
  lr: 1e-4          # YAML 1.1 reads this as a string; the schema makes it a float
  progress: "false"
  schedule: linear
""")
    cfg = load_run_config(path, ["train.steps=12", "method.rank=16", "train.grad_accum=2.0",
                                 "train.progress=true", "target.ops=[+, '*']", "probe.heldout=40"])
    assert cfg.model.name == "tiny"
    assert cfg.method.name == "lora" and cfg.method.options.rank == 16 and cfg.method.options.alpha == 8.0
    assert isinstance(cfg.method.options.alpha, float)
    assert cfg.train.steps == 12  # --set beats the YAML
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.grad_accum == 2 and isinstance(cfg.train.grad_accum, int)
    assert cfg.train.progress is True
    assert cfg.train.schedule == "linear"
    assert cfg.target.options.n_train == 100 and cfg.target.options.ops == ["+", "*"]
    assert cfg.probe.heldout == 40
    assert cfg.train.tokens_per_step == cfg.train.batch_size * 2 * cfg.train.seq_len


@pytest.mark.parametrize(
    "override,attr,value",
    [
        ("train.lr=1e-4", ("train", "lr"), 1e-4),
        ("train.lr=3", ("train", "lr"), 3.0),
        ("train.progress=false", ("train", "progress"), False),
        ("train.progress=no", ("train", "progress"), False),
        ("train.progress=True", ("train", "progress"), True),
        ("train.steps=16", ("train", "steps"), 16),
        ("train.lr=null", ("train", "lr"), None),
        ("target.ops=+,*", ("target", "ops"), ["+", "*"]),
        ("target.ops=[-]", ("target", "ops"), ["-"]),
        ("model.revision=123", ("model", "revision"), "123"),
    ],
)
def test_override_types(override, attr, value):
    cfg = load_run_config(None, BASE + [override])
    section = getattr(cfg, attr[0])
    got = getattr(section.options if hasattr(section, "options") else section, attr[1])
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "override,field,hint",
    [
        ("method.rnk=3", "method.rnk", "did you mean 'rank'?"),
        ("train.lrr=1e-3", "train.lrr", "did you mean 'lr'?"),
        ("probe.heldot=3", "probe.heldout", None),
        ("methdo=lora", "methdo", "did you mean 'method'?"),
        ("method.name=lorra", "method.name", "did you mean 'lora'?"),
        ("target.name=arihtm", "target.name", "did you mean 'arith'?"),
        ("objective.name=sfft", "objective.name", "did you mean 'sft'?"),
        ("train.schedule=cosin", "train.schedule", "did you mean 'cosine'?"),
    ],
)
def test_unknown_names_suggest_the_closest(override, field, hint):
    with pytest.raises(ConfigError) as info:
        load_run_config(None, BASE + [override])
    msg = str(info.value)
    if hint is None:  # unknown key: its own name is reported, the suggestion names the real one
        assert info.value.field == "probe.heldot" and "did you mean 'heldout'?" in msg
    else:
        assert info.value.field == field and hint in msg
    assert "\n" not in msg


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_run_config(None, BASE + ["method=nonsense-xyz"])
    msg = str(info.value)
    assert "did you mean" not in msg  # nothing close
    for name in ("lora", "oft", "full", "vera"):
        assert name in msg


@pytest.mark.parametrize(
    "override,field,words",
    [
        ("method.rank=0", "method.rank", "positive"),
        ("method.rank=-4", "method.rank", "positive"),
        ("method.alpha=0", "method.alpha", "> 0"),
        ("method.dropout=1.0", "method.dropout", "[0, 1)"),
        ("method.target_modules=,", "method.target_modules", "all-linear"),
        ("train.steps=0", "train.steps", "positive"),
        ("train.steps=abc", "train.steps", "integer"),
        ("train.steps=2.5", "train.steps", "integer"),
        ("train.lr=-1", "train.lr", "> 0"),
        ("train.lr=fast", "train.lr", "float"),
        ("train.progress=maybe", "train.progress", "true or false"),
        ("train.seq_len=8", "train.seq_len", ">= 16"),
        ("train.device=tpu", "train.device", "cuda"),
        ("probe.heldout=4", "probe.greedy", "<= probe.heldout"),
        ("target.ops=[/]", "target.ops", "allowed"),
    ],
)
def test_invalid_values_name_the_field(override, field, words):
    with pytest.raises(ConfigError) as info:
        load_run_config(None, BASE + [override])
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: invalid value")
    assert words in str(info.value)


def test_component_specific_validation():
    with pytest.raises(ConfigError, match=r"method\.init_rank.*>= rank"):
        load_run_config(None, BASE + ["method=adalora", "method.rank=8", "method.init_rank=4"])
    with pytest.raises(ConfigError, match=r"method\.block_size.*positive"):
        load_run_config(None, BASE + ["method=oft", "method.block_size=0"])
    # OFT options do not exist on LoRA: the option set follows the method.
    with pytest.raises(ConfigError, match=r"method\.block_size.*unknown field"):
        load_run_config(None, BASE + ["method=lora", "method.block_size=8"])


@pytest.mark.parametrize("bad", ["train.lr", "train.lr=", "=3", "train..lr=3"])
def test_malformed_set_is_rejected(bad):
    with pytest.raises(ConfigError) as info:
        load_run_config(None, BASE + [bad])
    assert str(info.value).startswith("override: ") or "train.lr" in str(info.value)


def test_method_shorthand_and_options_reach_the_method(tmp_path):
    import torch

    from arena.components import build_components
    from arena.runs import load_and_wrap

    # YAML shorthand `method: lora`, then an option on top of it.
    cfg = load_run_config(_yaml(tmp_path, "model: tiny\nmethod: lora\ntarget: arith\n"), ["method.rank=16"])
    assert cfg.method.name == "lora" and cfg.method.options.rank == 16
    # The same through --set only, shorthand after the option and before it.
    for sets in (["method=lora", "method.rank=16"], ["method.rank=16", "method.name=lora"]):
        c = load_run_config(None, BASE + sets)
        assert c.method.name == "lora" and c.method.options.rank == 16
    method, _, _ = build_components(cfg, check_data=False)
    assert method.options.rank == 16
    model, _, _ = load_and_wrap(cfg, method, torch.device("cpu"))
    ranks = {m.weight.shape[0] for n, m in model.named_modules() if n.endswith("lora_A.default")}
    assert ranks == {16}


def test_defaults():
    cfg = load_run_config(None, ["model.name=tiny"])
    assert (cfg.method.name, cfg.target.name, cfg.objective.name) == ("lora", "math", "sft")
    assert cfg.method.options.rank == 8 and cfg.train.lr is None


@pytest.mark.parametrize("name", ["vera", "full"])
def test_lr_defaults_to_the_methods(name, tiny_run_config):
    from arena.experiment import run_training
    from arena.components import METHODS

    cfg = tiny_run_config(method=name, train__steps=1, probe__heldout=0)
    assert cfg.train.lr is None
    record = run_training(cfg, log=lambda msg: None)
    assert record["method"]["lr"] == METHODS.get(name).default_lr
    assert record["train"]["steps"] == 1


def test_dump_yaml_round_trip(tmp_path):
    cfg = load_run_config(None, BASE + ["method=oft", "method.block_size=16", "train.lr=3e-4", "target.ops=[+, '*']"])
    again = run_config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again.to_dict() == cfg.to_dict()
    assert again.method.options.block_size == 16


def test_config_file_errors(tmp_path):
    with pytest.raises(ArenaError, match="not found"):
        load_run_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ArenaError, match="not valid YAML"):
        load_run_config(_yaml(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ArenaError, match="mapping"):
        load_run_config(_yaml(tmp_path, "- a\n- b\n"))


def test_shipped_configs_load():
    """Every shipped YAML validates: sweep configs (they list `methods`) as sweeps, the rest as runs."""
    import yaml

    from arena.sweeps.expand import expand
    from arena.sweeps.load import load_sweep_config

    configs = sorted((REPO / "configs").glob("*.yaml"))
    kinds = set()
    for path in configs:
        if "methods" in (yaml.safe_load(path.read_text()) or {}):
            assert expand(load_sweep_config(str(path))), path
            kinds.add("sweep")
        else:
            load_run_config(str(path))
            kinds.add("run")
    assert kinds == {"sweep", "run"}


def test_config_layer_imports_no_torch():
    """Loading and validating configs must stay cheap: the registries import components lazily."""
    import subprocess
    import sys

    code = ("import sys, arena.config, arena.runs, arena.components, arena.sweeps.load, arena.cli, runners\n"
            "arena.cli.build_parser()  # every command module, as `arena --help` loads them\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'lm_eval') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def _package(tmp_path, name: str, modules: dict) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(body)


def test_registry_discovers_its_package_once(tmp_path, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    body = "from gadgets_ok.registry import GADGETS\n@GADGETS.register({!r})\nclass G: pass\n"
    _package(tmp_path, "gadgets_ok", {
        "registry": "from arena.registry import Registry\nGADGETS = Registry('gadget', package='gadgets_ok')\n",
        "alpha": body.format("alpha"), "beta": body.format("beta"),
        "_private": "raise RuntimeError('private modules are not imported')"})
    reg = importlib.import_module("gadgets_ok.registry").GADGETS
    assert reg.names() == ["alpha", "beta"]  # found by module name, nothing lists them
    assert "alpha" in reg and reg.get("beta").__name__ == "G"
    with pytest.raises(ConfigError, match="known gadgets: alpha, beta"):
        reg.get("gamma", field="thing.name")


def test_registry_discovery_failure_is_not_silent(tmp_path, monkeypatch):
    from arena.registry import Registry

    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "gadgets_broken", {"bad": "raise ImportError('needs a missing library')"})
    reg = Registry("gadget", package="gadgets_broken")
    for _ in range(2):  # a failed discovery is retried, never taken as "no entries"
        with pytest.raises(ImportError, match="missing library"):
            reg.names()


def test_builtin_registries_find_every_component_module():
    from arena.components import METHODS, OBJECTIVES, TARGETS

    assert {"lora", "oft", "full", "vera"} <= set(METHODS.names())
    assert set(TARGETS.names()) >= {"arith", "math", "medical"}
    assert set(OBJECTIVES.names()) >= {"sft", "grpo", "opd", "gkd"}


@dataclass
class _LrOptions:
    lr: Union[float, dict[str, float], None] = None


def test_schema_coerces_typed_mappings_and_names_the_inner_field():
    from arena.schema import build

    Opts = _LrOptions
    assert build(Opts, {"lr": {"sft": "1e-4"}}).lr == {"sft": 1e-4}  # YAML 1.1 reads 1e-4 as a string
    assert build(Opts, {"lr": "2e-3"}).lr == 2e-3
    with pytest.raises(ConfigError, match=r"^m\.lr\.sft: invalid value 'x'; expected a number"):
        build(Opts, {"lr": {"sft": "x"}}, "m")
    with pytest.raises(ConfigError, match=r"^m\.lr: invalid value 'x'; expected float or dict or null"):
        build(Opts, {"lr": "x"}, "m")
