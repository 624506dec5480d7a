"""`python -m ranker_svc [flags]`: run the public Recommend service."""

from ranker_svc.server import serve
from ranker_svc.settings import RankerSettings
from recsys.rpc.config import load_settings
from recsys.rpc.server import run


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(RankerSettings, argv, "ranker_svc", "Recommend API: ranking and diversity (gRPC).")
    run(lambda: serve(settings), "ranker_svc", settings.log_format, settings.event_loop)


if __name__ == "__main__":
    main()
