from tests.conftest import Glimpse


async def test_upload_becomes_ready(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, caption="hello", filter="clarendon")
    assert response.status_code == 202, response.text
    post = response.json()
    assert post["status"] == "processing"
    assert await glimpse.run_jobs() == 1
    response = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)
    print(response.json())
    assert response.json()["status"] == "ready"
