"""One atheris harness for every parser target of fuzz/targets.py: `python fuzz/harness.py NAME [libFuzzer
flags] [CORPUS_DIR]`. The recsys modules are instrumented for coverage guidance; a target raising (an
`Unclear` error, or anything else) is a crash that libFuzzer saves as an artifact and reports."""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["recsys", "ranker_svc", "fuzz"]):
    # the parsers' modules, imported here so they are instrumented (the targets import them lazily)
    import recsys.cli_events  # noqa: F401
    import recsys.data.canonical  # noqa: F401
    import recsys.data.cleaning  # noqa: F401
    import recsys.data.movielens  # noqa: F401
    import recsys.data.spec  # noqa: F401
    import recsys.experiments.config  # noqa: F401
    import recsys.rpc.config  # noqa: F401
    import recsys.training.config  # noqa: F401
    from fuzz import targets


def main() -> None:
    name = sys.argv.pop(1)
    target = targets.TARGETS[name]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
