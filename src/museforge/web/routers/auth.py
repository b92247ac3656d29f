"""Accounts: the session (and its CSRF token), sign up, log in, log out."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from museforge.store import Conflict, user_owner
from museforge.web.deps import (
    ApiWriterDep,
    Services,
    ServicesDep,
    Visitor,
    VisitorDep,
    new_anonymous_session,
    record,
)
from museforge.web.security import check_new_credentials, hash_password, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


class Credentials(BaseModel):
    username: str
    password: str


def session_json(visitor: Visitor) -> dict:
    return {
        "user": None if visitor.user is None else {"id": visitor.user.id, "username": visitor.user.username},
        "csrf_token": visitor.session.csrf,
    }


def start_session(services: Services, request: Request, old: Visitor, user_id: str) -> Visitor:
    """A fresh session for a user who just signed in (no session fixation); what they made anonymously in the
    old session becomes theirs. Sign-ins are what store sessions, so this is where expired ones are pruned."""
    repo = services.repo
    if old.user is None:
        if services.events is not None:
            services.events.flush()  # the visitor's buffered events move with their records
        repo.transfer_owner(old=old.owner, new=user_owner(user_id))
    repo.delete_session(session_id=old.session.id)
    repo.prune_sessions(created_before=time.time() - services.settings.session_max_age_s)
    session = repo.create_session(user_id=user_id)
    request.state.set_session = session.id
    visitor = Visitor(session, repo.get_user(user_id=user_id), old.address)
    request.state.visitor = visitor
    return visitor


def end_session(services: Services, request: Request, old: Visitor) -> Visitor:
    services.repo.delete_session(session_id=old.session.id)
    visitor = Visitor(new_anonymous_session(services, request), None, old.address)
    request.state.visitor = visitor
    return visitor


def sign_up(services: Services, request: Request, visitor: Visitor, username: str, password: str) -> Visitor:
    try:
        check_new_credentials(username, password)
        user = services.repo.create_user(username=username, password_hash=hash_password(password))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
    record(services, user_owner(user.id), "signup")
    return start_session(services, request, visitor, user.id)


def log_in(services: Services, request: Request, visitor: Visitor, username: str, password: str) -> Visitor:
    user = services.repo.find_user(username=username)
    if user is None or not verify_password(user.password_hash, password):
        raise HTTPException(401, "wrong user name or password")
    return start_session(services, request, visitor, user.id)


@router.get("/session")
def get_session(visitor: VisitorDep) -> dict:
    """Who I am, and the CSRF token API writes must send in the X-CSRF-Token header."""
    return session_json(visitor)


@router.post("/signup", status_code=201)
def signup(body: Credentials, request: Request, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    return session_json(sign_up(services, request, visitor, body.username, body.password))


@router.post("/login")
def login(body: Credentials, request: Request, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    return session_json(log_in(services, request, visitor, body.username, body.password))


@router.post("/logout")
def logout(request: Request, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    return session_json(end_session(services, request, visitor))
