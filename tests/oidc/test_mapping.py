"""The pure parts of single sign-on: claims → project roles, usernames, admin rights."""

from __future__ import annotations

from typing import Any

import pytest

from agora.errors import InvalidInput
from agora.models import Role
from agora.services.oidc import (
    admin_from_claims,
    check_role_patterns,
    claim_values,
    project_roles,
    sanitise_name,
    username_from_claims,
)
from agora.settings import OIDCSettings
from agora.web.oidc import safe_next

EGI = OIDCSettings(roles_claim="eduperson_entitlement")
KEYCLOAK = OIDCSettings(roles_claim="groups")


def egi(vo: str, role: str) -> str:
    return f"urn:mace:egi.eu:group:{vo}:role={role}#aai.egi.eu"


def test_egi_entitlements_map_to_roles_through_aliases() -> None:
    claims = {
        "eduperson_entitlement": [
            egi("biomed", "member"),
            egi("biomed", "vm_operator"),
            egi("Fusion", "manager"),
            egi("lab.x", "admin"),
            egi("astro", "viewer"),
            egi("chem", "supporter"),  # not a role Agora knows
            egi("biomed:tutorial", "owner"),  # a subgroup
        ]
    }
    assert project_roles(claims, EGI) == {
        "biomed": Role.member,
        "fusion": Role.owner,
        "lab.x": Role.owner,
        "astro": Role.viewer,
    }


def test_keycloak_groups_with_and_without_leading_slash() -> None:
    claims = {"groups": ["/biomed/owner", "physics/viewer", "/biomed", "/a/b/owner", "/x/guest"]}
    assert project_roles(claims, KEYCLOAK) == {"biomed": Role.owner, "physics": Role.viewer}


def test_highest_role_wins_whatever_the_order() -> None:
    values = ["/p1/viewer", "/p1/owner", "/p1/member", "/p2/member", "/p2/viewer"]
    assert project_roles({"groups": values}, KEYCLOAK) == {"p1": Role.owner, "p2": Role.member}
    reverse = {"groups": list(reversed(values))}
    assert project_roles(reverse, KEYCLOAK) == {"p1": Role.owner, "p2": Role.member}


@pytest.mark.parametrize(
    "value",
    [
        "/-dash-first/owner",
        "/_under/owner",
        "/a/owner",  # shorter than project names may be
        "/" + "x" * 64 + "/owner",
    ],
)
def test_project_names_agora_cannot_use_are_skipped(value: str) -> None:
    assert project_roles({"groups": [value]}, KEYCLOAK) == {}


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("/solo/member", ["/solo/member"]),
        (["/a/owner", 3, None, "/b/viewer"], ["/a/owner", "/b/viewer"]),
        (None, []),
        ({"not": "a list"}, []),
    ],
)
def test_claim_may_be_a_string_or_a_list(claim: Any, expected: list[str]) -> None:
    assert claim_values({"groups": claim}, "groups") == expected


def test_first_matching_pattern_decides_and_role_group_may_be_optional() -> None:
    oidc = OIDCSettings(
        roles_claim="wlcg.groups",
        role_patterns=[
            r"^/(?P<project>[a-z]+)/(?P<role>admins)$",
            r"^/(?P<project>[a-z]+)(?:/(?P<role>[a-z]+))?$",
        ],
        role_aliases={"Admins": "owner"},
    )
    claims = {"wlcg.groups": ["/cms", "/atlas/admins", "/lhcb/viewer"]}
    assert project_roles(claims, oidc) == {
        "cms": Role.member,
        "atlas": Role.owner,
        "lhcb": Role.viewer,
    }


def test_other_claims_are_ignored() -> None:
    assert project_roles({"groups": ["/a1/owner"]}, EGI) == {}


@pytest.mark.parametrize(
    "pattern",
    [r"^(?P<project>.+)$", r"^(?P<project>[a-z]+):(?P<role>", r"^/(?P<role>x)$"],
)
def test_unusable_role_patterns_fail_at_start(pattern: str) -> None:
    with pytest.raises(ValueError, match="AGORA_OIDC_ROLE_PATTERNS"):
        check_role_patterns(OIDCSettings(role_patterns=[pattern]))


def test_default_role_patterns_are_usable() -> None:
    check_role_patterns(OIDCSettings())


def test_admin_values_match_exactly_and_only_when_configured() -> None:
    oidc = OIDCSettings(roles_claim="groups", admin_values=["/agora/admins"])
    assert admin_from_claims({"groups": ["/agora/admins"]}, oidc) is True
    assert admin_from_claims({"groups": ["/agora/admins/x", "/AGORA/admins"]}, oidc) is False
    assert admin_from_claims({"groups": ["/agora/admins"]}, KEYCLOAK) is None


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Alice", "alice"),
        ("John Smith (EGI)", "john-smith-egi"),
        ("José.Müller", "jose.muller"),
        ("__root__", "root"),
        ("a" * 80, "a" * 63),
        ("日本", ""),
    ],
)
def test_sanitise_name(raw: str, name: str) -> None:
    assert sanitise_name(raw) == name


def test_username_falls_back_to_the_email_local_part() -> None:
    assert username_from_claims({"preferred_username": "Bob"}, KEYCLOAK) == "bob"
    assert username_from_claims({"email": "Carol.D@example.org"}, KEYCLOAK) == "carol.d"
    assert (
        username_from_claims({"preferred_username": "日本", "email": "jp@x.jp"}, KEYCLOAK) == "jp"
    )
    with pytest.raises(InvalidInput, match="preferred_username"):
        username_from_claims({"sub": "x"}, KEYCLOAK)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/"),
        ("/projects/x?tab=keys#top", "/projects/x?tab=keys#top"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("relative", "/"),
        ("/login?next=/x", "/"),
        ("/auth/oidc/login", "/"),
    ],
)
def test_only_local_paths_are_returned_to(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected
