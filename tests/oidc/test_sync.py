"""Accounts and project roles follow the provider's claims at every sign-in, through the real
flow; memberships a person set are never touched."""

from __future__ import annotations

from sqlalchemy import select

from agora.models import AuditEntry
from tests.oidc.conftest import PROVIDER_WARNINGS, Browser, MakeBrowser

pytestmark = PROVIDER_WARNINGS

EGI = "urn:mace:egi.eu:group:{vo}:role={role}#aai.egi.eu"


def oidc_audit(browser: Browser) -> list[tuple[str, str | None, dict[str, object]]]:
    with browser.runtime.db.session() as db:
        rows = db.scalars(
            select(AuditEntry)
            .where(AuditEntry.action.startswith("member."))
            .order_by(AuditEntry.seq)
        )
        return [(e.action, e.project, e.details) for e in rows if e.details.get("source") == "oidc"]


def test_roles_follow_claims_and_local_memberships_stay(browser: Browser) -> None:
    first = ["/alpha/owner", "/beta/member", "/gamma/member"]
    assert (
        browser.sign_in("kc-ann", {"preferred_username": "ann", "groups": first}).status_code == 303
    )
    # A person gives ann a role by hand in gamma (that membership becomes "local") and in delta.
    assert browser.api.patch("/projects/gamma/members/ann", {"role": "viewer"}).status_code == 200
    browser.api.project("delta")
    assert (
        browser.api.post(
            "/projects/delta/members", {"username": "ann", "role": "viewer"}
        ).status_code
        == 201
    )
    browser.sign_out()

    second = ["/alpha/viewer", "/epsilon/member", "/delta/owner"]  # beta and gamma dropped
    assert (
        browser.sign_in("kc-ann", {"preferred_username": "ann", "groups": second}).status_code
        == 303
    )

    assert browser.roles() == {
        "alpha": "viewer",  # changed
        "epsilon": "member",  # added
        "gamma": "viewer",  # local: kept although the claim disappeared
        "delta": "viewer",  # local: the claim does not raise it
    }
    members = browser.api.get("/projects/alpha/members").json()
    assert [(m["username"], m["source"]) for m in members if m["username"] == "ann"] == [
        ("ann", "oidc")
    ]
    assert oidc_audit(browser)[-3:] == [
        ("member.update", "alpha", {"from": "owner", "to": "viewer", "source": "oidc"}),
        ("member.add", "epsilon", {"role": "member", "source": "oidc"}),
        ("member.remove", "beta", {"role": "member", "source": "oidc"}),
    ]


def test_egi_check_in_entitlements(make_browser: MakeBrowser) -> None:
    browser = make_browser(roles_claim="eduperson_entitlement", username_claim="voperson_id")
    entitlements = [
        EGI.format(vo="biomed", role="member"),
        EGI.format(vo="biomed", role="vm_operator"),
        EGI.format(vo="VO.Access.EGI.eu", role="manager"),
        EGI.format(vo="biomed:sub-group", role="member"),  # subgroups are not projects
        "urn:mace:egi.eu:aai.egi.eu:member@vo.example",
    ]
    claims = {"email": "Jane.Doe@example.org", "eduperson_entitlement": entitlements}
    assert browser.sign_in("egi-123@egi.eu", claims).status_code == 303
    me = browser.me()
    assert me["user"]["username"] == "jane.doe"  # no voperson_id: the e-mail's local part
    assert browser.roles() == {"biomed": "member", "vo.access.egi.eu": "owner"}


def test_local_account_with_the_same_username_is_not_taken_over(browser: Browser) -> None:
    assert browser.api.post("/users", {"username": "frank"}).status_code == 201
    assert browser.sign_in("kc-frank", {"preferred_username": "Frank"}).status_code == 303
    assert browser.me()["user"]["username"] == "frank-2"
    browser.sign_out()
    assert browser.sign_in("kc-frank-other", {"preferred_username": "frank"}).status_code == 303
    assert browser.me()["user"]["username"] == "frank-3"


def test_disabled_account_is_refused(browser: Browser) -> None:
    assert browser.sign_in("kc-gina", {"preferred_username": "gina"}).status_code == 303
    browser.sign_out()
    assert browser.api.patch("/users/gina", {"disabled": True}).status_code == 200
    r = browser.sign_in("kc-gina", {"preferred_username": "gina"})
    assert r.status_code == 403
    assert "disabled" in r.text
    assert "agora_session" not in browser.client.cookies
    with browser.runtime.db.session() as db:
        entry = db.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).one()
    assert (entry.action, entry.outcome, entry.target) == ("auth.login", "failure", "user:gina")


def test_identity_without_username_or_email_is_refused(browser: Browser) -> None:
    r = browser.sign_in("kc-nameless", {"groups": ["/alpha/owner"]})
    assert r.status_code == 400
    assert "preferred_username" in r.text and "administrator" in r.text


def test_admin_rights_follow_admin_values(make_browser: MakeBrowser) -> None:
    browser = make_browser(admin_values=["/agora-admins"])
    claims = {"preferred_username": "hana", "groups": ["/agora-admins", "/alpha/member"]}
    assert browser.sign_in("kc-hana", claims).status_code == 303
    assert browser.me()["user"]["is_admin"] is True
    browser.sign_out()
    assert browser.sign_in("kc-hana", {**claims, "groups": ["/alpha/member"]}).status_code == 303
    assert browser.me()["user"]["is_admin"] is False


def test_without_create_projects_only_existing_projects_are_joined(
    make_browser: MakeBrowser,
) -> None:
    browser = make_browser(create_projects=False)
    browser.api.project("existing")
    claims = {"preferred_username": "ivan", "groups": ["/existing/member", "/unknown/owner"]}
    assert browser.sign_in("kc-ivan", claims).status_code == 303
    assert browser.roles() == {"existing": "member"}
    assert browser.api.get("/projects/unknown").status_code == 404
