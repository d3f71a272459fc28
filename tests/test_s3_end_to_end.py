"""The real server with transcripts in S3 (moto's server over HTTP): nothing lives only in the database."""
from __future__ import annotations

import json

import boto3
import pytest
from moto.server import ThreadedMotoServer

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import LiveServer, free_port, server_env

pytestmark = pytest.mark.slow

BUCKET = "chat-transcripts"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_server(tmp_path, s3_endpoint):
    with FakeModelServer() as model:
        env = server_env(tmp_path, model.url, AWS_STORAGE_BUCKET_NAME=BUCKET, AWS_S3_ENDPOINT_URL=s3_endpoint,
                         AWS_S3_REGION_NAME="us-east-1", AWS_S3_KEY_PREFIX="e2e/", **CREDENTIALS)
        server = LiveServer(env)
        server.manage("migrate", "--noinput")
        token = server.create_token("alice")
        server.start()
        yield server, token, s3_endpoint
        server.stop()


def bucket_objects(endpoint: str) -> dict[str, dict]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return {key: json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in keys}


async def test_messages_land_in_the_bucket_and_sync_rebuilds_the_sidebar(s3_server):
    server, token, endpoint = s3_server
    tab = await Tab.open(server.ws_url, token)
    await tab.send("message.send", conversation=None, content="to the bucket #tokens=5")
    created = await tab.receive("conversation.created")
    conversation_id = created["conversation"]["id"]
    _, final = await tab.follow_reply()
    assert final["type"] == "reply.completed"
    title = (await tab.receive("conversation.updated"))["conversation"]["title"]
    await tab.close()

    objects = bucket_objects(endpoint)
    user_id = tab.hello["user"]["id"]
    key = f"e2e/conversations/{user_id}/{conversation_id}.json"
    assert list(objects) == [key]
    stored = objects[key]
    assert stored["version"] == 1 and stored["title"] == title
    assert [m["content"] for m in stored["messages"]] == ["to the bucket #tokens=5", "w0 w1 w2 w3 w4"]

    # A new database knows nothing; sync_conversations rebuilds the sidebar from the bucket.
    server.manage("shell", "-c", "from chat.models import Conversation; Conversation.objects.all().delete()")
    assert "1 conversations synchronised" in server.manage("sync_conversations")
    assert "1 conversations synchronised" in server.manage("sync_conversations")  # idempotent
    tab = await Tab.open(server.ws_url, token)
    assert [(c["id"], c["title"]) for c in tab.hello["conversations"]] == [(conversation_id, title)]
    await tab.send("conversation.open", conversation=conversation_id)
    state = await tab.receive("conversation.state")
    assert [m["content"] for m in state["messages"]] == ["to the bucket #tokens=5", "w0 w1 w2 w3 w4"]
    await tab.close()
