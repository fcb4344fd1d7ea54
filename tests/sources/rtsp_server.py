"""A real RTSP server on loopback for the live-source tests (GStreamer's RTSP server).

Run with Debian's interpreter, which has the GObject bindings:

    /usr/bin/python3 tests/sources/rtsp_server.py --port 8554 [--path /live] [--fps 25]

It serves an H.264 test pattern (a moving ball with a running time overlay when the
text plugin is available) at rtsp://127.0.0.1:PORT/PATH, prints "READY <url>" once it
listens, and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/live")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--audio", action="store_true", help="also serve a 440 Hz tone (A-law)")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=300 ! "
        f"rtph264pay name=pay0 pt=96 config-interval=1 "
        + ("audiotestsrc is-live=true freq=440 volume=0.3 ! audio/x-raw,rate=8000,channels=1 ! "
           "alawenc ! rtppcmapay name=pay1 pt=8 " if args.audio else "")
        + ")"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
