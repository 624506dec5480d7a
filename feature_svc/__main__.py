"""`python -m feature_svc [flags]`: run the feature store service."""

from feature_svc.server import serve
from feature_svc.settings import FeatureSettings
from recsys.rpc.config import load_settings
from recsys.rpc.server import run


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(FeatureSettings, argv, "feature_svc", "Online feature store (gRPC).")
    run(lambda: serve(settings), "feature_svc", settings.log_format, settings.event_loop)


if __name__ == "__main__":
    main()
