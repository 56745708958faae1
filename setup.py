"""Which packages the wheel holds, found rather than listed: every package under mimicry/, and the
config tree conf/ as `mimicry.conf` with each of its folders (config groups) a package of YAML files.
Everything else about the build is in pyproject.toml."""
from setuptools import find_namespace_packages, find_packages, setup

config_groups = [f"mimicry.conf.{group}" for group in find_namespace_packages("conf")]
setup(packages=[*find_packages(include=["mimicry", "mimicry.*"]), "mimicry.conf", *config_groups],
      package_dir={"mimicry": "mimicry", "mimicry.conf": "conf"})
