from tests.helpers import Api


def test_admin_key_sees_itself(api: Api) -> None:
    r = api.get("/me")
    assert r.status_code == 200
    assert r.json()["user"]["username"] == "admin"
