"""Templates: typed inputs validated with messages naming the field and the rule; commands
rendered with every value shell-quoted; malformed files reported one by one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agora.deployments.templates import load_all, load_directory, parse, render, validate_inputs
from agora.errors import InvalidInput

GOOD = """
name: echo
title: Echo
kind: job
inputs:
  message: {type: string, pattern: "^[^;]*$"}
  times: {type: integer, default: 1, min: 1, max: 3}
  ratio: {type: number, default: 0.5, min: 0, max: 1}
  loud: {type: boolean}
  colour: {type: choice, choices: [red, green], default: red}
  password: {type: secret, required: false}
resources:
  cpus: "{{ times }}"
  memory_mb: "{{ (ratio * 1000) | int + 100 }}"
command: |
  for i in $(seq {{ times }}); do echo {{ message }} {{ colour }} {{ loud }}; done
env:
  SECRET: "{{ password or '' }}"
"""


def template():  # type: ignore[no-untyped-def]
    return parse(GOOD, "echo.yaml")


def test_builtins_load_cleanly() -> None:
    templates, problems = load_all([])
    assert problems == []
    assert {"jupyterlab", "batch", "http-service"} <= set(templates)
    assert templates["jupyterlab"].kind == "service"


def test_defaults_and_coercion_from_strings() -> None:
    values = validate_inputs(template(), {"message": "hi", "times": "2", "loud": "yes"})
    assert values == {
        "message": "hi",
        "times": 2,
        "ratio": 0.5,
        "loud": True,
        "colour": "red",
        "password": None,
    }


@pytest.mark.parametrize(
    ("given", "field", "rule"),
    [
        ({}, "message", "required"),
        ({"message": "a;b"}, "message", "pattern"),
        ({"message": "x", "times": 9}, "times", "at most 3"),
        ({"message": "x", "times": 0}, "times", "at least 1"),
        ({"message": "x", "times": "two"}, "times", "an integer"),
        ({"message": "x", "times": 1.5}, "times", "an integer"),
        ({"message": "x", "ratio": "lots"}, "ratio", "a number"),
        ({"message": "x", "loud": "maybe"}, "loud", "true or false"),
        ({"message": "x", "colour": "blue"}, "colour", "one of red, green"),
        ({"message": "x", "size": 3}, "size", "no such input"),
        ({"message": "a\x00b"}, "message", "control characters"),
        ({"message": ["list"]}, "message", "a string"),
    ],
)
def test_bad_inputs_name_field_and_rule(given: dict, field: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(template(), given)
    assert info.value.extra["field"] == field
    assert info.value.detail.startswith(f"{field}: ")
    assert rule in info.value.detail


def test_values_cannot_escape_their_shell_argument(tmp_path: Path) -> None:
    hostile = (
        f"$(touch {tmp_path}/pwned) `touch {tmp_path}/pwned2` ' \" \\ && touch {tmp_path}/pwned3"
    )
    t = parse(GOOD.replace('pattern: "^[^;]*$"', "max_length: 500"), "echo.yaml")
    rendered = render(t, validate_inputs(t, {"message": hostile}), {"id": "d1"})
    out = subprocess.run(
        ["bash", "-c", rendered.script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"{hostile} red false"
    assert list(tmp_path.iterdir()) == []


def test_resources_follow_inputs() -> None:
    rendered = render(
        template(), validate_inputs(template(), {"message": "x", "times": 3, "ratio": 1}), {}
    )
    assert (rendered.resources.cpus, rendered.resources.memory_mb) == (3, 1100)
    assert rendered.env == {"SECRET": ""}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("kind: job", "kind: cronjob"), "kind"),
        (("name: echo", "name: Echo Job"), "name"),
        (("title: Echo\n", ""), "title: Field required"),
        (
            ("{type: integer, default: 1, min: 1, max: 3}", "{type: integer, min: 5, max: 3}"),
            "'min' is greater",
        ),
        (("{type: choice, choices: [red, green], default: red}", "{type: choice}"), "choices"),
        (("default: red}", "default: blue}"), "one of red, green"),
        (("echo {{ message }}", "echo {{ password }}"), "secret input(s) password"),
        (("echo {{ message }}", "echo {{ nope }}"), "unknown name(s): nope"),
        (("echo {{ message }}", "echo {{ message "), "not a valid template"),
        (('pattern: "^[^;]*$"', 'pattern: "(["'), "not a valid regular expression"),
        (("kind: job", "kind: job\nflavour: vanilla"), "flavour: Extra inputs are not permitted"),
    ],
)
def test_malformed_templates_are_refused_clearly(change: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(InvalidInput) as info:
        parse(text, "echo.yaml")
    assert info.value.detail.startswith("echo.yaml: ")
    assert message in info.value.detail


def test_a_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    (tmp_path / "list.yml").write_text("- just\n- a list\n")
    (tmp_path / "dup.yaml").write_text(GOOD)
    found, problems = load_directory(tmp_path)
    assert list(found) == ["echo"]
    messages = {Path(p.source).name: p.message for p in problems}
    assert set(messages) == {"broken.yaml", "list.yml", "good.yaml"} or set(messages) == {
        "broken.yaml",
        "list.yml",
        "dup.yaml",
    }
    assert "not valid YAML" in messages["broken.yaml"]
    assert "must be a YAML mapping" in messages["list.yml"]


def test_operator_directory_overrides_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "batch.yaml").write_text(GOOD.replace("name: echo", "name: batch"))
    templates, problems = load_all([tmp_path])
    assert problems == []
    assert templates["batch"].source.endswith("batch.yaml")


def test_builtin_batch_runs_the_command_verbatim(tmp_path: Path) -> None:
    t = load_all([])[0]["batch"]
    rendered = render(t, validate_inputs(t, {"command": 'echo "$((6*7))" | tr 4 X'}), {})
    out = subprocess.run(
        ["bash", "-c", rendered.script],
        capture_output=True,
        text=True,
        check=True,
        env={"AGORA_PROJECT_DIR": str(tmp_path / "w"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "X2"


def test_admins_see_template_files_that_did_not_load(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from agora.app import create_app
    from agora.bootstrap import bootstrap
    from agora.runtime import Runtime
    from tests.conftest import ADMIN_KEY, make_settings

    extra = tmp_path / "templates"
    extra.mkdir()
    (extra / "bad.yaml").write_text("name: Bad Name\ntitle: x\nkind: job\ncommand: true\n")
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/a.db", template_dirs=[extra])
    runtime = Runtime.create(settings)
    app = create_app(runtime=runtime)
    bootstrap(runtime)
    with TestClient(app) as client:
        r = client.get(
            "/api/v1/system/template-problems", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert r.status_code == 200
        [problem] = r.json()
        assert problem["source"].endswith("bad.yaml") and "name" in problem["problem"]
        assert "batch" in {
            t["name"]
            for t in client.get(
                "/api/v1/templates", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            ).json()
        }
    runtime.db.dispose()
