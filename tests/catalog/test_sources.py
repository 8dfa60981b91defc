"""Reading catalog directories and git checkouts from disk."""

from __future__ import annotations

from pathlib import Path

from agora.catalog.sources import BUILTIN_DIR, Source, configured, scan
from tests.catalog.documents import run_git, v1, v2, write_module


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write_module(tmp_path, "mods", v2())
    write_module(tmp_path, "broken", "title: [unclosed\n")
    write_module(tmp_path, "classifier", v1())
    write_module(tmp_path, "nolinks", v2(links=None))
    (tmp_path / "no-metadata-here").mkdir()
    results = scan(Source(tmp_path, "directory"))
    by_file = {r.file: r for r in results}
    assert sorted(by_file) == [
        f"{tmp_path.name}/broken/ai4-metadata.yml",
        f"{tmp_path.name}/classifier/metadata.json",
        f"{tmp_path.name}/mods/ai4-metadata.yml",
        f"{tmp_path.name}/nolinks/ai4-metadata.yml",
    ]
    assert by_file[f"{tmp_path.name}/mods/ai4-metadata.yml"].spec is not None
    assert by_file[f"{tmp_path.name}/classifier/metadata.json"].spec is not None
    broken = by_file[f"{tmp_path.name}/broken/ai4-metadata.yml"]
    assert broken.spec is None
    assert str(broken.problems[0]).startswith(
        f"{tmp_path.name}/broken/ai4-metadata.yml: not valid YAML"
    )
    assert [str(p) for p in by_file[f"{tmp_path.name}/nolinks/ai4-metadata.yml"].problems] == [
        f"{tmp_path.name}/nolinks/ai4-metadata.yml: links: required"
    ]


def test_git_checkout_records_its_commit(tmp_path: Path) -> None:
    repo = tmp_path / "modules"
    write_module(repo, "mods", v2())
    run_git(repo.parent, "init", "-q", str(repo))
    run_git(repo, "add", ".")
    run_git(repo, "commit", "-q", "-m", "first")
    head = run_git(repo, "rev-parse", "HEAD")
    (source,) = configured([repo], builtin=False)
    assert source.kind == "git"
    (result,) = scan(source)
    assert result.spec is not None and result.spec.name == "mods"
    assert result.commit == head


def test_a_module_repository_is_one_module(tmp_path: Path) -> None:
    repo = tmp_path / "DEEP-OC-mods"
    write_module(tmp_path, "DEEP-OC-mods", v1(), file="metadata.json")
    (result,) = scan(Source(repo, "directory"))
    assert result.spec is not None and result.spec.name == "deep-oc-mods"


def test_a_missing_directory_is_one_problem(tmp_path: Path) -> None:
    (result,) = scan(Source(tmp_path / "gone", "directory"))
    assert result.spec is None
    assert "does not exist" in str(result.problems[0])


def test_builtin_examples_are_valid() -> None:
    results = scan(Source(BUILTIN_DIR, "builtin"))
    assert results, "no built-in examples"
    assert [str(p) for r in results for p in r.problems] == []
