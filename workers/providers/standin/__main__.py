"""``python -m workers.providers.standin``: serve the stand-in in the foreground."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the server until interrupted."""
    import uvicorn

    from workers.providers.standin.app import create_app
    from workers.providers.standin.config import StandInConfig

    parser = argparse.ArgumentParser(prog="python -m workers.providers.standin",
                                     description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="fixed delay added to every model call")
    parser.add_argument("--per-token-ms", type=float, default=0.0,
                        help="extra delay per output token")
    parser.add_argument("--batch-delay-s", type=float, default=0.0,
                        help="seconds a Batch API batch takes to finish")
    args = parser.parse_args(argv)
    import os

    from models.domain.catalogue import load_catalogue

    # Your price file, when set: the stand-in then knows its deployments' model ids (a
    # Bedrock id, an Azure deployment name) and OpenAI-compatible models.
    config = StandInConfig(latency_ms=args.latency_ms, per_token_latency_ms=args.per_token_ms,
                           batch_delay_s=args.batch_delay_s,
                           catalogue=load_catalogue(os.environ.get("SLUICE_PRICES_PATH")))
    print(f"stand-in: OpenAI base_url http://{args.host}:{args.port}/v1, "
          f"Anthropic and Gemini base_url http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, http="h11",
                lifespan="off", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
