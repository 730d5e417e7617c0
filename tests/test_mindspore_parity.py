"""The MindSpore fronts against real MindSpore 2.10 (CPU), run in its own venv.

MindSpore (which needs numpy < 2) lives in the venv made by
``ci/mindspore_env.sh`` (``$NPU_SYNCBN_MS_VENV``, default
``~/.cache/npu_syncbn/ms-venv``) and runs only in subprocesses:
``tests/mindspore_ref/ms_single.py`` takes every single-process case at once
(numerics, names, checkpoints, argument errors) and writes npz/JSON;
``tests/mindspore_ref/dist_case.py`` runs under ``msrun`` with 2 workers and
under our ``npu-syncbn-run`` with 2 gloo ranks. This file computes our side
and compares. Skipped, with the reason, when that venv is absent.

Where the fronts deliberately differ from MindSpore (docs/mindspore.md), the
test asserts MindSpore still behaves as recorded, so a change there shows.
"""
import builtins
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from dist_utils import free_port
from launch_utils import REPO, launcher_env, run_launcher
from npu_syncbn import mindspore as ms_front
from npu_syncbn import mint

MS_VERSION = "2.10.0"
MS_VENV = os.environ.get("NPU_SYNCBN_MS_VENV") or os.path.expanduser("~/.cache/npu_syncbn/ms-venv")
MS_PYTHON = os.path.join(MS_VENV, "bin", "python")
MS_READY = os.path.join(MS_VENV, f".npu_syncbn-mindspore-{MS_VERSION}")
REF = os.path.join(REPO, "tests", "mindspore_ref")

if not (os.path.exists(MS_PYTHON) and os.path.exists(MS_READY)):
    pytest.skip(f"no MindSpore {MS_VERSION} venv at {MS_VENV} (ci/mindspore_env.sh makes it when the package "
                "registry is reachable; it printed why not)", allow_module_level=True)

# float32 on both sides; errors relative to the reference's largest magnitude (at least 1)
TOL = {"y": 2e-6, "dx": 2e-5, "d": 2e-5, "p": 2e-6}
C = 3


def _ms_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "RANK_ID", "RANK_SIZE", "DEVICE_ID")}
    env["PATH"] = os.path.join(MS_VENV, "bin") + os.pathsep + env.get("PATH", "")
    env.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only
    return env


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(1.0, float(np.abs(ref).max()))) if ref.size else 0.0


# ----------------------------------------------------------------------------- the single-process cases

def _steps(*modes):
    return list(modes)


# id -> (front, kwargs, input shape, modes of the steps)
CASES = {
    "nn_4d_default": ("nn", {}, (4, C, 3, 2), _steps("train", "train", "eval")),
    "nn_2d_momentum_eps": ("nn", {"momentum": 0.7, "eps": 1e-3}, (6, C), _steps("train", "train", "eval")),
    "nn_momentum_0": ("nn", {"momentum": 0.0}, (4, C, 2, 2), _steps("train", "eval")),
    "nn_momentum_1": ("nn", {"momentum": 1.0}, (4, C, 2, 2), _steps("train", "eval")),
    "nn_affine_off": ("nn", {"affine": False, "gamma_init": 2.0, "beta_init": -1.0}, (5, C), _steps("train", "eval")),
    "nn_inits": ("nn", {"gamma_init": 1.5, "beta_init": 0.5, "moving_mean_init": 0.25, "moving_var_init": 2.0},
                 (4, C, 2, 2), _steps("eval", "train", "eval")),
    "nn_ubs_none": ("nn", {"use_batch_statistics": None}, (4, C, 2, 2), _steps("train", "eval")),
    "nn_ubs_true": ("nn", {"use_batch_statistics": True, "moving_var_init": 3.0}, (4, C, 2, 2),
                    _steps("eval", "train", "eval")),
    "nn_ubs_false": ("nn", {"use_batch_statistics": False, "moving_mean_init": 0.5, "moving_var_init": 2.0},
                     (4, C, 2, 2), _steps("train", "eval")),
    "mint_4d_default": ("mint", {}, (4, C, 3, 2), _steps("train", "train", "eval")),
    "mint_3d_momentum_none": ("mint", {"momentum": None}, (4, C, 5), _steps("train", "train", "train", "eval")),
    "mint_2d_momentum_eps": ("mint", {"momentum": 0.3, "eps": 1e-3}, (6, C), _steps("train", "eval")),
    "mint_affine_off": ("mint", {"affine": False}, (5, C, 2), _steps("train", "eval")),
}
# Cases MindSpore 2.10 refuses on CPU although its documentation describes them; our fronts follow the documentation.
MS_REFUSES = {
    "nn_3d": (("nn", {}, (4, C, 5), _steps("train")), "ValueError"),  # documented 2-D/4-D only; ours takes (N, C, *)
    "mint_5d": (("mint", {"momentum": 0.5}, (2, C, 2, 3, 2), _steps("train", "eval")),
                "ValueError"),  # documented (N, C, +); its CPU kernel takes 2-D to 4-D
    "mint_no_running_stats": (("mint", {"track_running_stats": False}, (4, C, 2), _steps("train", "eval")),
                              "ValueError"),  # documented: batch statistics in both modes
}

# Argument errors: id -> (front, kwargs). Compared by type; our message names the argument.
ERRORS = {
    "nn_num_features_float": ("nn", {"num_features": 2.0}),
    "nn_num_features_0": ("nn", {"num_features": 0}),
    "nn_momentum_1.5": ("nn", {"momentum": 1.5}),
    "nn_momentum_-0.1": ("nn", {"momentum": -0.1}),
    "nn_momentum_none": ("nn", {"momentum": None}),
    "nn_affine_str": ("nn", {"affine": "yes"}),
    "nn_use_batch_statistics_1": ("nn", {"use_batch_statistics": 1}),
    "nn_use_batch_statistics_str": ("nn", {"use_batch_statistics": "True"}),
    "nn_process_groups_out_of_range": ("nn", {"process_groups": [[0, 1]]}),
    "nn_process_groups_empty": ("nn", {"process_groups": []}),
    "nn_process_groups_world_of_one": ("nn", {"process_groups": [[0]]}),
    "nn_gamma_init_bool": ("nn", {"gamma_init": True}),
    "nn_gamma_init_name": ("nn", {"gamma_init": "no_such_init"}),
    "nn_eps_int": ("nn", {"eps": 1}),
    "nn_process_groups_str": ("nn", {"process_groups": "0-1"}),
    "mint_num_features_float": ("mint", {"num_features": 2.0}),
    "mint_momentum_none": ("mint", {"momentum": None}),
    "mint_process_group_int": ("mint", {"process_group": 3}),
    "mint_num_features_0": ("mint", {"num_features": 0}),
    "mint_eps_int": ("mint", {"eps": 1}),
    "mint_momentum_1.5": ("mint", {"momentum": 1.5}),
    "mint_affine_int": ("mint", {"affine": 1}),
    "mint_track_running_stats_int": ("mint", {"track_running_stats": 1}),
}
# Where our type deliberately differs: id -> (what MindSpore 2.10 does, what we raise). MindSpore's documentation
# names our error for each (a non-float eps: TypeError; process_groups not a list: TypeError; num_features < 1 and
# momentum outside [0, 1]: ValueError; affine and track_running_stats are bools).
DELIBERATE = {
    "nn_eps_int": ("ok", TypeError),
    "nn_process_groups_str": ("ValueError", TypeError),
    "mint_num_features_0": ("ok", ValueError),
    "mint_eps_int": ("ok", TypeError),
    "mint_momentum_1.5": ("ok", ValueError),
    "mint_affine_int": ("ok", TypeError),
    "mint_track_running_stats_int": ("ok", TypeError),
}

NAMES = {"nn": ("nn", {}), "nn_affine_off": ("nn", {"affine": False}), "mint": ("mint", {}),
         "mint_affine_off": ("mint", {"affine": False}), "mint_momentum_none": ("mint", {"momentum": None})}
CHECKPOINT_LAYERS = {"nn_bare": ("nn", False), "nn_net": ("nn", True), "mint_bare": ("mint", False),
                     "mint_net": ("mint", True)}


def _kwargs(kwargs):
    return {"num_features": C, **kwargs}


def _ours(front, kwargs):
    return (ms_front.SyncBatchNorm if front == "nn" else mint.SyncBatchNorm)(**_kwargs(kwargs))


class _Net(torch.nn.Module):
    """Our layer as ``bn`` of a network (names as in a model's checkpoint)."""

    def __init__(self, layer):
        super().__init__()
        self.bn = layer

    def forward(self, x):
        return self.bn(x)


def _our_names(front, model):
    """Our state_dict names as a MindSpore checkpoint has them (nn front: converted)."""
    sd = model.state_dict()
    return set(ms_front.to_mindspore_state_dict(sd) if front == "nn" else sd)


def _run_case(front, kwargs, modes, inputs, case_id):
    """Our side of ms_single.run_case: per step output, gradients, parameters (MindSpore names)."""
    layer = _ours(front, kwargs)
    to_ms = ms_front.to_mindspore_state_dict if front == "nn" else dict
    param_names = {"weight": "gamma", "bias": "beta"} if front == "nn" else {}
    out = {}
    for i, mode in enumerate(modes):
        layer.set_train(mode == "train")
        x = torch.from_numpy(inputs[f"{case_id}/{i}/x"]).requires_grad_(True)
        y = layer(x)
        (y * torch.from_numpy(inputs[f"{case_id}/{i}/g"])).sum().backward()
        key = f"{case_id}/{i}/"
        out[key + "y"], out[key + "dx"] = y.detach().numpy(), x.grad.numpy()
        for name, p in layer.named_parameters():
            if p.grad is not None:
                out[key + "d_" + param_names.get(name, name)] = p.grad.numpy().copy()
                p.grad = None
        for name, v in to_ms(layer.state_dict()).items():
            out[key + "p_" + name] = v.detach().numpy().copy()
    return out


@pytest.fixture(scope="module")
def ms_single(tmp_path_factory):
    """Run every single-process case in MindSpore once; build our side of the load cases first."""
    work = tmp_path_factory.mktemp("ms_single")
    rng = np.random.default_rng(2026)
    inputs, spec = {}, {"cases": [], "names": {}, "errors": {}, "load": [], "checkpoints": []}
    for case_id, (front, kwargs, shape, modes) in {**CASES, **{k: v[0] for k, v in MS_REFUSES.items()}}.items():
        steps = []
        for i, _ in enumerate(modes):
            inputs[f"{case_id}/{i}/x"] = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
            inputs[f"{case_id}/{i}/g"] = rng.standard_normal(shape).astype(np.float32)
            steps.append({"mode": modes[i], "x": f"{case_id}/{i}/x", "g": f"{case_id}/{i}/g"})
        spec["cases"].append({"id": case_id, "front": front, "kwargs": _kwargs(kwargs), "steps": steps})
    spec["names"] = {k: [f, _kwargs(kw)] for k, (f, kw) in NAMES.items()}
    spec["errors"] = {k: [f, _kwargs(kw)] for k, (f, kw) in ERRORS.items()}
    ours_loaded = {}
    for item_id, (front, in_net) in CHECKPOINT_LAYERS.items():
        train_x = (rng.standard_normal((6, C, 2, 2)) * 3 + 1).astype(np.float32)
        eval_x = rng.standard_normal((4, C, 2, 1)).astype(np.float32)
        inputs[f"ck/{item_id}/x"], inputs[f"ck/{item_id}/eval_x"] = train_x, eval_x
        spec["checkpoints"].append({"id": item_id, "front": front, "kwargs": _kwargs({}), "in_net": in_net,
                                    "x": f"ck/{item_id}/x", "eval_x": f"ck/{item_id}/eval_x"})
        # ours -> MindSpore: a trained layer of ours, its checkpoint under MindSpore names
        layer = _ours(front, {"momentum": 0.6} if front == "nn" else {"momentum": 0.4})
        model = _Net(layer) if in_net else layer
        layer.set_train(True)
        model(torch.from_numpy(train_x))
        with torch.no_grad():
            layer.weight.mul_(1.5).add_(0.25)
        layer.set_train(False)
        ours_loaded[item_id] = model(torch.from_numpy(eval_x)).detach().numpy()
        sd = model.state_dict()
        sd = ms_front.to_mindspore_state_dict(sd) if front == "nn" else sd
        for k, v in sd.items():
            inputs[f"load/{item_id}/{k}"] = v.numpy()
        spec["load"].append({"id": item_id, "front": front, "kwargs": _kwargs({"momentum": 0.6} if front == "nn" else
                                                                               {"momentum": 0.4}),
                             "in_net": in_net, "prefix": f"load/{item_id}/", "x": f"ck/{item_id}/eval_x"})
    np.savez(work / "inputs.npz", **inputs)
    (work / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([MS_PYTHON, os.path.join(REF, "ms_single.py"), str(work / "spec.json"),
                           str(work / "inputs.npz"), str(work)], env=_ms_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"ms_single.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    report = json.loads((work / "out.json").read_text())
    assert report["version"] == MS_VERSION
    return {"inputs": inputs, "report": report, "arrays": dict(np.load(work / "out.npz")),
            "ours_loaded": ours_loaded}


@pytest.mark.parametrize("case_id", list(CASES))
def test_numerics_match_mindspore(ms_single, case_id):
    report, ref = ms_single["report"], ms_single["arrays"]
    assert case_id not in report["case_errors"], report["case_errors"][case_id]
    front, kwargs, _, modes = CASES[case_id]
    ours = _run_case(front, kwargs, modes, ms_single["inputs"], case_id)
    theirs = {k: v for k, v in ref.items() if k.startswith(case_id + "/")}
    assert set(ours) == set(theirs), f"ours only: {set(ours) - set(theirs)}, MindSpore only: {set(theirs) - set(ours)}"
    worst = {}
    for key in sorted(theirs):
        kind = key.rsplit("/", 1)[1]
        kind = kind if kind in ("y", "dx") else kind[0]
        err = _rel(ours[key], theirs[key])
        worst[kind] = max(worst.get(kind, 0.0), err)
        assert err <= TOL[kind], (key, err, ours[key], theirs[key])
    print(f"{case_id}: worst relative error {worst}")


@pytest.mark.parametrize("case_id", list(MS_REFUSES))
def test_documented_cases_mindspore_refuses_on_cpu(ms_single, case_id):
    (front, kwargs, shape, modes), error = MS_REFUSES[case_id]
    got = ms_single["report"]["case_errors"].get(case_id)
    assert got is not None and got[0] == error, f"MindSpore 2.10 now runs {case_id} ({got}): compare it numerically"
    # ours runs it as the documentation says: torch's BatchNorm on the same batch (batch statistics both modes)
    layer = _ours(front, kwargs)
    track = kwargs.get("track_running_stats", True)
    momentum = kwargs.get("momentum", 0.1)
    ref = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[len(shape)](
        C, momentum=momentum, track_running_stats=track)
    for i, mode in enumerate(modes):
        layer.set_train(mode == "train"), ref.train(mode == "train")
        x = torch.from_numpy(ms_single["inputs"][f"{case_id}/{i}/x"])
        torch.testing.assert_close(layer(x), ref(x))


def test_parameter_names_and_flags(ms_single):
    for key, (front, kwargs) in NAMES.items():
        theirs = ms_single["report"]["names"][key]
        layer = _ours(front, kwargs)
        assert _our_names(front, layer) == {n for n, _ in theirs["bare"]}, (key, theirs["bare"])
        assert _our_names(front, _Net(_ours(front, kwargs))) == {n for n, _ in theirs["net"]}, (key, theirs["net"])
        learned = {n: rg for n, rg in theirs["bare"] if n in ("gamma", "beta", "weight", "bias")}
        ours = {("gamma" if n == "weight" else "beta") if front == "nn" else n: p.requires_grad
                for n, p in layer.named_parameters()}
        assert ours == learned, (key, ours, learned)
        assert layer.training == theirs["training"] is False
        if theirs["affine"] is not None:
            assert layer.affine == theirs["affine"], key


@pytest.mark.parametrize("item_id", list(CHECKPOINT_LAYERS))
def test_mindspore_checkpoint_loads_strictly_into_ours(ms_single, item_id):
    front, in_net = CHECKPOINT_LAYERS[item_id]
    prefix = f"{item_id}/ckpt/"
    ckpt = {k[len(prefix):]: v for k, v in ms_single["arrays"].items() if k.startswith(prefix)}
    assert set(ckpt) == set(ms_single["report"]["checkpoints"][item_id])
    layer = _ours(front, {})
    model = _Net(layer) if in_net else layer
    sd = ms_front.from_mindspore_state_dict(ckpt) if front == "nn" else {k: torch.from_numpy(v) for k, v in ckpt.items()}
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    if front == "nn" and not in_net:  # the layer's own loader takes the raw MindSpore names too
        again = _ours(front, {})
        assert not again.load_state_dict({k: torch.from_numpy(v) for k, v in ckpt.items()}, strict=True).missing_keys
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), layer.state_dict().values()))
    x = torch.from_numpy(ms_single["inputs"][f"ck/{item_id}/eval_x"])
    err = _rel(model(x).detach().numpy(), ms_single["arrays"][f"{item_id}/eval_y"])
    assert err <= TOL["y"], err


@pytest.mark.parametrize("item_id", list(CHECKPOINT_LAYERS))
def test_our_checkpoint_loads_strictly_into_mindspore(ms_single, item_id):
    result = ms_single["report"]["load"][item_id]
    assert result["not_loaded"] == [] and result["unused"] == [], result
    err = _rel(ms_single["ours_loaded"][item_id], ms_single["arrays"][f"{item_id}/y"])
    assert err <= TOL["y"], err


@pytest.mark.parametrize("error_id", list(ERRORS))
def test_argument_errors(ms_single, error_id):
    front, kwargs = ERRORS[error_id]
    theirs, their_message = ms_single["report"]["errors"][error_id]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # process_groups=[]: warned, as tests/test_mindspore_front.py checks
            _ours(front, kwargs)
        ours = None
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        ours = e
    print(f"{error_id}: MindSpore {theirs}: {their_message} | ours {type(ours).__name__}: {ours}")
    if error_id in DELIBERATE:
        recorded, our_type = DELIBERATE[error_id]
        assert theirs == recorded, f"MindSpore 2.10 changed: {theirs}: {their_message}"
        assert isinstance(ours, our_type), repr(ours)
    elif theirs == "ok":
        assert ours is None, repr(ours)
        return
    else:
        assert ours is not None, f"MindSpore raises {theirs}: {their_message}; ours accepted {kwargs}"
        assert isinstance(ours, getattr(builtins, theirs)), repr(ours)
    argument = next(iter(kwargs))
    assert argument in str(ours), f"our message does not name {argument!r}: {ours}"


# ----------------------------------------------------------------------------- 2 processes


def test_two_workers_msrun_vs_our_launcher(tmp_path):
    """dist_case.py under msrun (MindSpore BatchNorm on the all-gathered batch)
    and under npu-syncbn-run (our fronts, 2 gloo ranks): every rank's output,
    input gradient, summed parameter gradients and moving statistics agree."""
    out = tmp_path / "out"
    out.mkdir()
    script = os.path.join(REF, "dist_case.py")
    common = ["--worker_num=2", "--local_worker_num=2", "--join=True", "--cluster_time_out=120"]
    msrun = shutil.which("msrun", path=os.path.join(MS_VENV, "bin"))
    assert msrun, f"no msrun in {MS_VENV}/bin"
    ms_proc = subprocess.Popen([msrun, *common, f"--master_port={free_port()}", f"--log_dir={tmp_path / 'ms_log'}",
                                script, "mindspore", str(out)], env=_ms_env(), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    env = launcher_env()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK_ID", "RANK_SIZE", "DEVICE_ID",
                 "NPU_SYNCBN_EMULATE_NPU"):
        env.pop(name, None)
    launcher = [os.path.join(os.path.dirname(sys.executable), "npu-syncbn-run")]
    try:
        ours = run_launcher([*common, f"--master_port={free_port()}", f"--log_dir={tmp_path / 'our_log'}", script,
                             "ours", str(out)], 240, cwd=tmp_path, env=env, launcher=launcher, merge_stderr=True)
        ms_out, _ = ms_proc.communicate(timeout=300)
    finally:
        if ms_proc.poll() is None:
            os.killpg(ms_proc.pid, 9)
    logs = lambda d: "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / d).glob("*.log")))  # noqa: E731
    assert ms_proc.returncode == 0, f"msrun failed:\n{ms_out[-3000:]}\n{logs('ms_log')}"
    assert ours.returncode == 0, f"npu-syncbn-run failed:\n{ours.stdout[-3000:]}\n{logs('our_log')}"
    worst = {}
    for rank in (0, 1):
        theirs, mine = np.load(out / f"mindspore_rank{rank}.npz"), np.load(out / f"ours_rank{rank}.npz")
        assert set(theirs) == set(mine)
        for key in theirs:
            kind = key.rsplit("/", 1)[1]
            err = _rel(mine[key], theirs[key])
            worst[kind] = max(worst.get(kind, 0.0), err)
            tol = TOL["y"] if kind == "y" else TOL["p"] if kind in ("mean", "var") else TOL["d"]
            assert err <= tol, (rank, key, err)
    print(f"2 workers, worst relative error: {worst}")
