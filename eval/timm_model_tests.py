"""Run timm's own model tests (``tests/test_models.py`` of the timm release we pin) against our ViTs.

    python eval/timm_model_tests.py [--models 'dslm_vit_tiny*' ...] [--timm-sdist PATH] [-- PYTEST ARGS]

timm's wheel carries no tests, so the script fetches the sdist of the installed timm version (``pip download
--no-binary :all:``; or ``--timm-sdist`` for a copy you have), extracts ``tests/``, and routes our models the way
timm routes its own ``vit_*``: ``dslm_vit*`` joins ``NON_STD_FILTERS`` (the transformer tests) and our module
(``vit``) joins ``FEAT_INTER_FILTERS`` (forward_intermediates / features_only). A conftest imports dslm_zoo before
collection, so the models are in timm's registry. ``dslm_vit*`` joins ``EXCLUDE_JIT_FILTERS``: TorchScript is deprecated
in the torch we pin, and the residual module calls branches of different signatures through ``*args``. Only the models matching ``--models`` run (default: the small
ViTs; the 1000-layer ones would take hours in these tests). Exit code: pytest's. The slow suite runs it
(``tests/test_timm_compat.py::test_timm_own_model_tests``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_MODELS = ["dslm_vit_tiny", "dslm_vit_deep_tiny", "dslm_vit_fm_*"]


def fetch_tests(dest: Path, sdist: str | None = None) -> Path:
    """Extract timm's ``tests/`` from its sdist into ``dest``; return the tests directory (patched)."""
    import timm

    if sdist is None:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                            "-d", str(dest), f"timm=={timm.__version__}"], capture_output=True, text=True)
        found = sorted(dest.glob("timm-*.tar.gz"))
        if r.returncode != 0 or not found:
            raise RuntimeError(f"pip download of the timm {timm.__version__} sdist failed: {r.stderr.strip()[-500:]}")
        sdist = str(found[0])
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name and m.isfile()]
        if not members:
            raise RuntimeError(f"{sdist} holds no tests/")
        tar.extractall(dest, members=members, filter="data")
    tests = next(dest.glob("timm-*/tests"))
    src = tests / "test_models.py"
    text = src.read_text()
    # TorchScript is deprecated in the torch we pin and our residual injects branches with different call
    # signatures (*args); timm excludes its own script-incompatible models (hiera, naflex) the same way.
    for old, new in (("    'vit_*', ", "    'vit_*', 'dslm_vit*', "), ("    'vision_transformer', ", "    'vision_transformer', 'vit', "),
                     ("    'hiera_*', ", "    'hiera_*', 'dslm_vit*', ")):
        if old not in text:
            raise RuntimeError(f"timm's test_models.py changed: cannot route our models ({old.strip()!r} not found)")
        text = text.replace(old, new, 1)
    src.write_text(text)
    with open(tests / "conftest.py", "a") as f:
        f.write("\nimport dslm_zoo  # noqa: E402,F401  (registers dslm_vit_* into timm's registry before collection)\n")
    return tests


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="eval/timm_model_tests.py", description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="fnmatch patterns of our models to test")
    ap.add_argument("--timm-sdist", help="a timm-VERSION.tar.gz you have (default: pip download it)")
    ap.add_argument("--tests", help="a pytest -k expression over timm's test names, and-ed with the model selection")
    args = ap.parse_args(argv)
    import fnmatch

    import dslm_zoo

    names = [n for n in dslm_zoo.list_models("dslm_vit*") if any(fnmatch.fnmatchcase(n, p) for p in args.models)]
    if not names:
        print(f"eval/timm_model_tests.py: error: no dslm_vit model matches {args.models}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="timm_tests_") as tmp:
        tests = fetch_tests(Path(tmp), args.timm_sdist)
        select = " or ".join(names)
        if args.tests:
            select = f"({select}) and ({args.tests})"
        cmd = [sys.executable, "-m", "pytest", str(tests / "test_models.py"), "-k", select, "-p", "no:cacheprovider",
               "-q", "-rfs", "-o", "addopts=", "-W", "ignore::pytest.PytestUnknownMarkWarning", *extra]
        print("running:", " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
