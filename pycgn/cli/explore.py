"""``pycgn explore``: a local web page to look at counterfactuals (``pycgn.explore``)."""
from __future__ import annotations

import sys


def _cmd_explore(args) -> int:
    from ..explore import LOOPBACK, make_server, url_of
    server = make_server(args.model, host=args.host, port=args.port, device=args.device)
    if args.host not in LOOPBACK:
        print(f"pycgn explore: warning: serving on {args.host}, not 127.0.0.1: anyone who can reach this "
              "machine can use the page (there is no authentication)", file=sys.stderr)
    print(f"pycgn explore: serving on {url_of(server)} (Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("pycgn explore: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("explore", help="a local web page to look at counterfactuals",
                       description="Serves a page to pick a model, classes, seed and n, and see the images, their "
                                   "parts, a labelled grid and an interpolation, with the Python call and command "
                                   "that reproduce them. Example: pycgn explore --model path/to/model.pt")
    p.add_argument("--model", action="append", default=[],
                   help="a checkpoint path to offer beside the shipped models (repeatable); the page can use "
                        "no other file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(func=_cmd_explore)
