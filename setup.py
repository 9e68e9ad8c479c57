"""Only here to put the device profiles (``targets/*.toml``, kept at the top of the
repository by design) into the package as ``edgecompress/_targets`` when a wheel is
built, so ``pip install edgecompress`` (not editable) finds them too. Everything
else is declared in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class build_py_with_targets(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "targets"
        dst = Path(self.build_lib) / "edgecompress" / "_targets"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.glob("*.toml")):
            shutil.copyfile(f, dst / f.name)


setup(cmdclass={"build_py": build_py_with_targets})
