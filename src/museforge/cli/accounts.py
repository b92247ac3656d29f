"""`museforge users` and `analytics`: the web app's accounts and the store's analytics."""

import json
from pathlib import Path
from typing import Annotated

import typer

from museforge.cli.shell import _fail, _store, app
from museforge.cli_show import console

users_app = typer.Typer(help="Accounts of the web app: create users, make operators.", no_args_is_help=True)
app.add_typer(users_app, name="users")
analytics_app = typer.Typer(
    help="What listeners do: the Insights report, event rollups.", no_args_is_help=True
)
app.add_typer(analytics_app, name="analytics")
VarDir = Annotated[
    Path | None, typer.Option(help="Folder of the web app's database (default: MUSEFORGE_VAR_DIR or var/).")
]


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name: 3 to 32 letters, digits, '_', '.' or '-'.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Asked when not given."),
    ],
    admin: Annotated[bool, typer.Option("--admin", help="An operator, who may see the Insights.")] = False,
    var: VarDir = None,
) -> None:
    """Create a user of the web app."""
    from museforge.store import Conflict
    from museforge.web.security import check_new_credentials, hash_password

    repo = _store(var)
    try:
        check_new_credentials(name, password)
        user = repo.create_user(username=name, password_hash=hash_password(password))
        if admin:
            repo.set_admin(user_id=user.id, admin=True)
    except (ValueError, Conflict) as exc:
        raise _fail(str(exc)) from exc
    finally:
        repo.close()
    console.print(f"[bold green]created[/] {name}{' (admin)' if admin else ''}")


@users_app.command("promote")
def users_promote(
    name: Annotated[str, typer.Argument(help="An existing user name.")],
    demote: Annotated[bool, typer.Option("--demote", help="Take the admin role back instead.")] = False,
    var: VarDir = None,
) -> None:
    """Make a user an operator (admin), who may see the Insights page and API."""
    repo = _store(var)
    try:
        user = repo.find_user(username=name)
        if user is None:
            raise _fail(f"no user {name!r}")
        repo.set_admin(user_id=user.id, admin=not demote)
    finally:
        repo.close()
    console.print(f"[bold green]{'demoted' if demote else 'promoted'}[/] {name}")


@analytics_app.command("report")
def analytics_report(
    since: Annotated[str, typer.Option(help="The last N days (30d) or weeks (4w).")] = "30d",
    out: Annotated[
        Path, typer.Option(help="HTML report to write (charts inline, no external files).")
    ] = Path("report.html"),
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    style: Annotated[str | None, typer.Option(help="Only this style.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Also write the figures as JSON next to it.")
    ] = False,
    var: VarDir = None,
) -> None:
    """The operators' Insights as a self-contained HTML file: activity, style interest, polarization."""
    from museforge.analytics.insights import Scope, insights, parse_span
    from museforge.analytics.report import insights_html, standalone

    try:
        scope = Scope.last(parse_span(since), model, style)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    repo = _store(var)
    try:
        figures = insights(repo, scope)
    finally:
        repo.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(standalone("museforge insights", insights_html(figures)), encoding="utf-8")
    if as_json:
        out.with_suffix(".json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    a, p = figures["activity"], figures["polarization"]
    er = "–" if p["esteban_ray"] is None else f"{p['esteban_ray']:.3f}"
    console.print(
        f"{scope.to_dict()['since']} to {scope.to_dict()['until']}: {p['listeners']} listeners, "
        f"{a['jobs_total']} generations, {len(p['clusters'])} taste clusters, Esteban-Ray {er}"
    )
    console.print(f"[bold green]wrote[/] {out}")


@analytics_app.command("rollup")
def analytics_rollup(
    older_than: Annotated[str, typer.Option(help="Fold raw events older than this (90d, 12w).")] = "90d",
    var: VarDir = None,
) -> None:
    """Fold old raw events into daily counts: every figure stays the same, the event table shrinks."""
    import time

    from museforge.analytics.insights import parse_span
    from museforge.store.records import day_of

    try:
        keep = parse_span(older_than)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    repo = _store(var)
    try:
        folded = repo.rollup_events(before_day=day_of(time.time()) + 1 - keep)
    finally:
        repo.close()
    console.print(f"[bold green]rolled up[/] {folded} raw events")
