"""Package layout that pyproject.toml cannot express on its own.

The repository keeps the trainer in the top-level ``training/`` folder (the product brief fixes
the top level), but it is installed as ``streamguard.training``: a wheel must never install a
top-level package called ``training``, which any other distribution could also ship. Everything
else (metadata, dependencies, entry points) lives in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

TRAINING = "streamguard.training"

packages = find_namespace_packages(include=["streamguard", "streamguard.*"])
packages += [
    TRAINING + name[len("training") :]
    for name in find_namespace_packages(include=["training", "training.*"])
    if "__pycache__" not in name
]

# Package data (the corpus lists included) is in pyproject.toml: a package_data argument here
# is ignored once pyproject.toml has a [tool.setuptools.package-data] table.
setup(
    packages=packages,
    package_dir={TRAINING: "training"},
)
