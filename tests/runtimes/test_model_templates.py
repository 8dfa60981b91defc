"""The built-in templates that run model servers: their rendered commands, run by bash with
stand-ins for ``vllm`` and Python that print the argument vector they were given, their resources,
and hostile inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from agora.deployments.backends.base import BackendConfig, JobSpec
from agora.deployments.backends.slurm import SlurmBackend
from agora.deployments.templates import Rendered, Template, load_all, render, validate_inputs
from agora.errors import InvalidInput
from agora.settings import Settings

TOKEN = "service-token-never-in-argv"
ECHO_ARGV = """#!/bin/sh
printf '%s\\n' "$@"
echo "key=$VLLM_API_KEY"
"""


def template(name: str) -> Template:
    templates, problems = load_all([])
    assert problems == []
    return templates[name]


def rendered(name: str, inputs: dict[str, Any]) -> Rendered:
    t = template(name)
    return render(t, validate_inputs(t, inputs), {"id": "d1"})


def run(script: str, tmp_path: Path) -> list[str]:
    """The script's output under bash, with ``vllm`` and $AGORA_PYTHON printing their argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("vllm", "python"):
        (bin_dir / name).write_text(ECHO_ARGV)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "AGORA_PROJECT_DIR": str(tmp_path / "project"),
        "AGORA_PYTHON": str(bin_dir / "python"),
        "AGORA_BIND_HOST": "10.1.2.3",
        "PORT": "8123",
        "AGORA_SERVICE_TOKEN": TOKEN,
    }
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, env=env
    )
    return out.stdout.splitlines()


def test_vllm_command_line(tmp_path: Path) -> None:
    r = rendered(
        "vllm",
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "served_name": "llama-3.1-8b",
            "gpus": 2,
            "dtype": "bfloat16",
            "max_model_len": 8192,
            "gpu_memory_utilization": 0.85,
        },
    )
    assert (
        "exec vllm serve meta-llama/Llama-3.1-8B-Instruct"
        ' --host "$AGORA_BIND_HOST" --port "$PORT" \\\n'
        "  --tensor-parallel-size 2 --dtype bfloat16 \\\n"
        "  --gpu-memory-utilization 0.85 --served-model-name llama-3.1-8b --max-model-len 8192\n"
    ) in r.script
    assert 'export VLLM_API_KEY="$AGORA_SERVICE_TOKEN"\n' in r.script
    assert r.readiness_path == "/health"
    argv = run(r.script, tmp_path)
    assert argv == [
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "10.1.2.3",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "2",
        "--dtype",
        "bfloat16",
        "--gpu-memory-utilization",
        "0.85",
        "--served-model-name",
        "llama-3.1-8b",
        "--max-model-len",
        "8192",
        f"key={TOKEN}",  # the key reaches vLLM through its environment only
    ]


def test_vllm_defaults_leave_out_optional_flags(tmp_path: Path) -> None:
    r = rendered("vllm", {"model": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert run(r.script, tmp_path)[:-1] == [
        "serve",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--host",
        "10.1.2.3",
        "--port",
        "8123",
        "--tensor-parallel-size",
        "1",
        "--dtype",
        "auto",
        "--gpu-memory-utilization",
        "0.9",
    ]
    assert TOKEN not in r.script


def test_vllm_asks_slurm_for_its_gpus(tmp_path: Path) -> None:
    r = rendered("vllm", {"model": "Qwen/Qwen2.5-7B-Instruct", "gpus": 4, "hours": 2})
    assert (r.resources.gpus, r.resources.cpus, r.resources.memory_mb) == (4, 8, 65536)
    assert r.resources.time_limit_minutes == 120
    spec = JobSpec(
        deployment_id="d1",
        kind="service",
        script=r.script,
        env=r.env,
        resources=r.resources,
        project="bio",
    )
    config = BackendConfig(name="hpc", kind="slurm", max_gpus=8, options={"partition": "gpu"})
    batch = SlurmBackend(config, Settings(data_dir=tmp_path)).render(spec, "d1-1")
    assert "#SBATCH --gres=gpu:4\n" in batch
    assert "#SBATCH --cpus-per-task=8\n" in batch
    typed = rendered("vllm", {"model": "m", "gpus": 2, "gpu_type": "a100"})
    assert typed.resources.gpu_type == "a100"
    spec = JobSpec(
        deployment_id="d2",
        kind="service",
        script=typed.script,
        env=typed.env,
        resources=typed.resources,
        project="bio",
    )
    batch = SlurmBackend(config, Settings(data_dir=tmp_path)).render(spec, "d2-1")
    assert "#SBATCH --gres=gpu:a100:2\n" in batch


def test_a_gpu_type_outside_the_pattern_is_refused() -> None:
    from agora.errors import InvalidInput

    with pytest.raises(InvalidInput):
        rendered("vllm", {"model": "m", "gpu_type": "a100\n#SBATCH --uid=0"})


def test_openai_cpu_command_line(tmp_path: Path) -> None:
    r = rendered(
        "openai-cpu",
        {
            "model_path": "models/my tiny $(model)",
            "model_kind": "embedding",
            "served_name": "org/minilm",
            "max_concurrency": 2,
        },
    )
    assert r.script.endswith(
        'exec "$AGORA_PYTHON" -m agora.runtimes.openai_server \\\n'
        "  --model 'models/my tiny $(model)' --kind embedding --max-concurrency 2"
        " --served-name org/minilm\n"
    )
    assert run(r.script, tmp_path)[:-1] == [
        "-m",
        "agora.runtimes.openai_server",
        "--model",
        "models/my tiny $(model)",
        "--kind",
        "embedding",
        "--max-concurrency",
        "2",
        "--served-name",
        "org/minilm",
    ]
    assert (r.resources.cpus, r.resources.gpus, r.readiness_path) == (4, 0, "/health")
    service = template("openai-cpu").service
    assert service is not None and service.strip_prefix


def test_openai_cpu_without_a_served_name_leaves_the_flag_out(tmp_path: Path) -> None:
    r = rendered("openai-cpu", {"model_path": "/models/tiny"})
    assert run(r.script, tmp_path)[:-1] == [
        "-m",
        "agora.runtimes.openai_server",
        "--model",
        "/models/tiny",
        "--kind",
        "llm",
        "--max-concurrency",
        "1",
    ]


@pytest.mark.parametrize(
    ("name", "inputs", "field"),
    [
        ("vllm", {"model": "x", "served_name": "x; rm -rf /"}, "served_name"),
        ("vllm", {"model": "org/m --trust-remote-code"}, "model"),
        ("vllm", {"model": "--trust-remote-code"}, "model"),
        ("vllm", {"model": "org/m", "gpus": 0}, "gpus"),
        ("vllm", {"model": "org/m", "dtype": "float8"}, "dtype"),
        ("vllm", {"model": "org/m", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ("vllm", {"model": "org/m", "max_model_len": "long"}, "max_model_len"),
        ("vllm", {"model": "org/m", "extra_args": "--enforce-eager"}, "extra_args"),
        ("openai-cpu", {"model_path": "-rf"}, "model_path"),
        ("openai-cpu", {"model_path": "/m", "model_kind": "vision"}, "model_kind"),
        ("openai-cpu", {"model_path": "/m", "served_name": "$(id)"}, "served_name"),
        ("openai-cpu", {"model_path": "/m", "max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_hostile_or_wrong_inputs_are_refused(name: str, inputs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(template(name), inputs)
    assert info.value.extra["field"] == field


def test_a_hostile_model_path_stays_one_argument(tmp_path: Path) -> None:
    hostile = f"/m'; touch {tmp_path}/pwned; echo '"
    r = rendered("openai-cpu", {"model_path": hostile})
    argv = run(r.script, tmp_path)
    assert argv[argv.index("--model") + 1] == hostile
    assert not (tmp_path / "pwned").exists()
