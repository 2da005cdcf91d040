"""The package a user installs and cites: license, citation, changelog, version, packaged files.

The slow test builds the wheel and installs it, without the checkout, into a fresh virtual
environment, then runs the documented commands there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import multimix
from multimix.cli import PACKAGED_CONFIGS, build_parser, packaged_configs, version
from multimix.train.config import TrainConfig

# Python 3.11's tomllib; on 3.10 its origin, tomli, where installed (else these tests are skipped)
tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_license_is_mit_in_pyproject_and_the_license_file():
    assert PROJECT["license"] == "MIT"  # an SPDX expression (PEP 639), not a table
    assert PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: the SPDX expression says it; a License classifier beside it is refused by setuptools
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the multimix authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    # setuptools reads `license` as SPDX from version 77 on
    requires = PYPROJECT["build-system"]["requires"]
    (minimum,) = (
        re.fullmatch(r"setuptools>=(\d+)[.\d]*", r) for r in requires if "setuptools" in r
    )
    assert minimum and int(minimum[1]) >= 77, requires


def test_one_version_everywhere():
    assert PROJECT["version"] == multimix.__version__ == version()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == PROJECT["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", changelog, flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert headings[1].startswith(f"{PROJECT['version']} - ")


def _check_reference(ref: dict, where: str) -> None:
    assert ref.get("type"), f"{where}: no type"
    assert ref.get("title"), f"{where}: no title"
    authors = ref.get("authors")
    assert isinstance(authors, list) and authors, f"{where}: no authors"
    for person in authors:  # a person (family-names) or an entity (name)
        assert person.get("family-names") or person.get("name"), (
            f"{where}: an author without a name"
        )


def test_citation_cff_parses_and_has_what_cff_1_2_0_requires():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["cff-version"]) == "1.2.0"
    for key in ("cff-version", "message", "title", "authors"):
        assert citation.get(key), f"CITATION.cff: no {key}"
    assert citation["title"] == PROJECT["name"] == "multimix"
    assert citation["type"] == "software"
    assert citation["license"] == PROJECT["license"]
    # Only URLs that exist: the project has no public repository yet
    assert "repository-code" not in citation
    _check_reference(citation, "CITATION.cff")
    preferred = citation["preferred-citation"]
    _check_reference(preferred, "preferred-citation")
    assert preferred["type"] == "conference-paper" and preferred["year"] == 2023
    assert preferred["title"].startswith("Embedding Space Interpolation Beyond Mini-Batch")
    titles = {ref["title"]: ref for ref in citation["references"]}
    for i, ref in enumerate(citation["references"]):
        _check_reference(ref, f"references[{i}]")
    assert "10.48550/arXiv.2206.14868" in str(
        titles["Teach me how to Interpolate a Myriad of Embeddings"]
    )
    # The study of depth, the MMLB and ConfMix names no authors: the CFF's 'anonymous' entity
    assert titles["On Manifold Mixup for Deep Learning"]["authors"] == [{"name": "anonymous"}]


def test_the_repository_demo_config_is_the_packaged_one():
    assert (ROOT / "configs" / "demo.yaml").read_bytes() == (
        PACKAGED_CONFIGS / "demo.yaml"
    ).read_bytes()


@pytest.mark.parametrize("name", sorted(packaged_configs()))
def test_packaged_configurations_are_valid(name):
    config = TrainConfig.from_dict(TrainConfig.from_yaml(packaged_configs()[name]), source=name)
    config.validate()


def _help_texts() -> dict[str, str]:
    parser = build_parser()
    texts = {"multimix": parser.format_help()}
    (sub,) = (a for a in parser._actions if a.choices and a.dest == "command")
    texts.update({f"multimix {n}": p.format_help() for n, p in sub.choices.items()})
    return texts


def test_help_names_no_file_a_regular_install_lacks():
    texts = _help_texts()
    assert {"multimix train", "multimix compare", "multimix evaluate"} <= set(texts)
    for command, text in texts.items():
        flat = " ".join(text.split())  # help wraps lines, possibly inside a path
        for part in ("benchmarks/", "configs/", "docs/", "tests/", "examples/", ".md", ".py"):
            assert part not in flat, f"`{command} --help` names {part!r}: {flat}"


# -- the wheel, installed without the checkout --------------------------------------------------

PACKAGED_FILES = ("multimix/py.typed", "multimix/configs/demo.yaml", "multimix/cli.py")
#: pip, quietly, asking no index for anything (every package it needs is named or already here)
OFFLINE = ("-q", "--no-deps", "--no-index")
#: this venv's setuptools builds the wheel (--no-build-isolation): nothing is fetched
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", *OFFLINE, "--no-build-isolation")
#: the demo's one epoch on 500 of MNIST-1D's examples: seconds, not the demo's minutes
SHORT = ("--epochs", "1", "--train-subset", "500")


def _run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    )
    return result


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_demo_without_the_checkout(tmp_path):
    # Build from a copy of what the wheel is made of, so that setuptools' build/ and egg-info stay
    # out of the checkout. --no-build-isolation: this venv's setuptools, nothing fetched.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels = tmp_path / "wheels"
    _run(
        [*PIP_WHEEL, "-w", str(wheels), str(source)],
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = wheels.glob("multimix-*.whl")
    assert wheel.name.startswith(f"multimix-{PROJECT['version']}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in PACKAGED_FILES if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    dist_info = f"multimix-{PROJECT['version']}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata

    # A fresh venv whose dependencies (torch, numpy, ...) are this venv's site-packages, listed in a
    # .pth file. A directory named by a .pth line is not a site directory: the .pth files inside it,
    # among them the editable install's, are not read, so the checkout's multimix is not importable.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=env,
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "project-deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    absent = subprocess.run(
        [str(python), "-c", "import multimix"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert absent.returncode != 0 and "No module named 'multimix'" in absent.stderr
    # pip is the project venv's (found through the .pth file) and installs into the interpreter that
    # runs it, the new venv; --ignore-installed: the editable install's metadata, visible through the
    # .pth file too, is neither taken for this install nor touched.
    _run(
        [str(python), "-m", "pip", "install", *OFFLINE, "--ignore-installed", str(wheel)],
        cwd=outside,
        env=env,
    )

    multimix_cmd = str(venv / "bin" / "multimix")
    assert _run([multimix_cmd, "--version"], cwd=outside, env=env).stdout == (
        f"multimix {PROJECT['version']}\n"
    )
    where = _run(
        [
            str(python),
            "-c",
            "import multimix, multimix.cli as c; print(multimix.__file__); "
            "print(c.PACKAGED_CONFIGS)",
        ],
        cwd=outside,
        env=env,
    ).stdout.splitlines()
    for path in where:
        assert Path(path).resolve().is_relative_to(site.resolve()), f"{path} is not under {site}"
    assert (Path(where[1]) / "demo.yaml").is_file() and (
        Path(where[0]).parent / "py.typed"
    ).is_file()
    # The documented demo command, one short epoch of it
    out = outside / "demo-run"
    run = _run(
        [multimix_cmd, "train", "--config", "demo", *SHORT, "--quiet", "--out", str(out)],
        cwd=outside,
        env=env,
    )
    assert "mnist1d / cnn1d / erm" in run.stdout
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["dataset"], saved["model"], saved["lr"], saved["epochs"]) == (
        "mnist1d",
        "cnn1d",
        0.01,
        1,
    )
