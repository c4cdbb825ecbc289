"""``execflow shield``: run the VaultShield protecting proxy for one site."""

from __future__ import annotations

import click

from api.cli import load_settings


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command()
@click.option("--site-id", type=int, required=True, help="The site whose rules apply")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT")
@click.option("--upstream", default=None, help="Upstream base URL (default: the site's)")
def shield(site_id: int, listen: str, upstream: str | None) -> None:
    """Serve the VaultShield reverse proxy in front of a site's upstream."""
    from api.logs import configure_logging
    from models import migrate
    from tools.vaultshield.proxy import run_proxy

    host, port = _split_listen(listen)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    click.echo(f"VaultShield protecting site {site_id} on http://{listen}")
    run_proxy(settings, site_id=site_id, host=host, port=port, upstream=upstream)


def register(main: click.Group) -> None:
    main.add_command(shield)
