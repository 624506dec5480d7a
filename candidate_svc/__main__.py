"""`python -m candidate_svc [flags]`: run the candidate retrieval service."""

from candidate_svc.server import serve
from candidate_svc.settings import CandidateSettings
from recsys.rpc.config import load_settings
from recsys.rpc.server import run


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(CandidateSettings, argv, "candidate_svc", "Candidate retrieval (gRPC).")
    run(lambda: serve(settings), "candidate_svc", settings.log_format, settings.event_loop)


if __name__ == "__main__":
    main()
