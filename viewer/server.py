"""The viser server: one :class:`viewer.client_view.ClientView` per connected browser tab."""
from __future__ import annotations

import contextlib
import io
import socket
import threading
import viser

from utils.errors import UserError
from viewer.client_view import ClientView
from viewer.content import ViewerContent
from viewer.params import ServeParams

def check_port_free(host: str, port: int) -> None:
    """UserError naming ``--ip``/``--port`` when ``host:port`` cannot be bound (viser would silently pick another)."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: choose a port between 1 and 65535")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except socket.gaierror:
        raise UserError(f"--ip {host}: not a valid address of this machine; use e.g. 127.0.0.1 or 0.0.0.0") from None
    except OSError as exc:
        raise UserError(f"--ip {host} --port {port}: cannot listen there ({exc.strerror}); "
                        f"the port is probably in use: pick another with --port") from None


class ViewerServer:
    """Serves ``content`` to browsers at ``options.ip:options.port``."""

    def __init__(self, content: ViewerContent, options: ServeParams):
        check_port_free(options.ip, options.port)
        self.content, self.options = content, options
        self.views: dict[int, ClientView] = {}
        self._lock = threading.Lock()
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: we print one line with the address
            self.server = viser.ViserServer(host=options.ip, port=options.port, verbose=False)
        self.server.gui.configure_theme(control_width="medium", show_share_button=False)
        self.server.gui.main_panel.dock_right()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        host = "localhost" if self.options.ip in ("0.0.0.0", "::") else self.options.ip
        return f"http://{host}:{self.server.get_port()}"

    @property
    def num_clients(self) -> int:
        return len(self.views)

    def _connect(self, client: viser.ClientHandle) -> None:
        view = ClientView(client, self.content, self.options)
        with self._lock:
            self.views[client.client_id] = view

    def _disconnect(self, client: viser.ClientHandle) -> None:
        with self._lock:
            view = self.views.pop(client.client_id, None)
        if view is not None:
            view.close()

    def request_frames(self) -> None:
        """Every browser re-renders (the model or a shared setting changed)."""
        with self._lock:
            views = list(self.views.values())
        for view in views:
            view.request()

    def stop(self) -> None:
        with self._lock:
            views = list(self.views.values())
            self.views.clear()
        for view in views:
            view.close()
        with contextlib.redirect_stdout(io.StringIO()):  # viser's "Server stopped"
            self.server.stop()
