"""Packaging: the wheel holds jaxebm only; every third-party import is a declared dependency (the
library's in the core list, the runner's in the ``experiments`` extra)."""

import ast
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "PIL": "pillow",
    "absl": "absl-py",
    "espeakng_loader": "espeakng-loader",
    "orbax": "orbax-checkpoint",
    "sklearn": "scikit-learn",
    "tensorflow_datasets": "tensorflow-datasets",
}
# Installed with a declared dependency (jax ships jaxlib's pins; TFDS imports importlib_resources).
PROVIDED = {"jaxlib"}


def project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]


def names(requirements):
    return {re.split(r"[<>=!~\[; ]", requirement)[0].lower() for requirement in requirements}


def third_party_imports(package):
    found = set()
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name)) as file:
                tree = ast.parse(file.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    local = {"jaxebm", "experiments"}
    return {
        DISTRIBUTIONS.get(name, name).lower()
        for name in found - local - PROVIDED
        if name not in sys.stdlib_module_names
    }


def test_the_wheel_ships_the_library_only():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        find = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["jaxebm*"]


def test_imports_are_declared_where_they_belong():
    core = names(project()["dependencies"])
    extra = names(project()["optional-dependencies"]["experiments"])
    # The library's optional extras: imported only inside the function that needs them, which says
    # what to install when they are missing (jaxebm.data.text.gpt2_tokenizer; the synthesis of
    # jaxebm.data.speech).
    lm = names(project()["optional-dependencies"]["lm"])
    speech = names(project()["optional-dependencies"]["speech"])
    library = third_party_imports("jaxebm") - lm - speech
    assert library <= core, library - core
    runner = third_party_imports("experiments")
    assert runner <= core | extra, runner - core - extra
    # The extra holds only what the library does not need, and the core only what it does
    # (importlib_resources: TFDS imports it undeclared; chex: declared for the library's asserts).
    assert not extra & library
    assert extra <= runner, extra - runner
    unused = core - library - {"importlib_resources", "chex"}
    assert not unused, f"core dependencies the library does not import: {unused}"
