"""Package layout: backends/ and reference/ sit at the top of the repository but
install inside the imnn namespace (imnn.backends, imnn.reference), so
site-packages gains no generic top-level module names."""
from setuptools import find_packages, setup

ROOTS = {"imnn": "imnn", "imnn.backends": "backends", "imnn.reference": "reference"}

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
