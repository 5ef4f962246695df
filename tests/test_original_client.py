# The original ResourceManager client's own unit tests, kept as they are to show that old code
# written against its client runs against ours (issue 12).
#
# Origin: github.com/eucalyptus/DeploymentManager, resource_manager/tests/test_client.py at commit
# f3d2c12d8137296b615c21be256ff9fd4ba8a855. The only change is the Python 2 to 3 syntax one:
# `defaults.iteritems()` became `defaults.items()`. These tests mock HTTP with httpretty, as the
# original did; every other test of the client goes against the real server (tests/test_client.py,
# tests/test_compat.py).
#
# Licence of this file (BSD 2-clause), as the original repository states it:
#
# Copyright 2014-2017 Ent. Services Development Corporation LP
#
# Redistribution and use of this software in source and binary forms, with or
# without modification, are permitted provided that the following conditions
# are met:
#
#   Redistributions of source code must retain the above
#   copyright notice, this list of conditions and the
#   following disclaimer.
#
#   Redistributions in binary form must reproduce the above
#   copyright notice, this list of conditions and the
#   following disclaimer in the documentation and/or other
#   materials provided with the distribution.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
# AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
# IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE
# ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE
# LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
# CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
# SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
# INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
# CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE)
# ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
# POSSIBILITY OF SUCH DAMAGE.
#
# ruff: noqa: I001, F401, B904, UP030, UP032
import json
import httpretty
import urllib

from resource_manager.clientlib.client import ResourceManagerClient


def test_init():
    ResourceManagerClient()


def test_defaults(resource='machines'):
    client = ResourceManagerClient(resource)
    assert client.resource_type == resource
    defaults = dict(endpoint='http://127.0.0.1:5000/machines', resource_type='machines', key='hostname',
                    auth=('admin', 'admin'), headers={'content-type': 'application/json'},
                    fields=["hostname", "owner", "state", "job_id", "tags", "_updated", "_id"])
    for attribute, value in defaults.items():
        try:
            assert value == client.__getattribute__(attribute)
        except AssertionError:
            raise AssertionError("Default for {0} should be:{1}\n"
                                 "Received: {2}".format(attribute, client.__getattribute__(attribute), value))


@httpretty.activate
def test_get():
    client = ResourceManagerClient()
    resource = 'test_machine'
    response_body = '{"_id": "my_id"}'
    httpretty.register_uri(httpretty.GET, client.endpoint + "/" + resource,
                           body=response_body)
    assert client.get_resource(resource) == json.loads(response_body)


@httpretty.activate
def test_create():
    client = ResourceManagerClient()
    resource = "{\"hostname\":\"resource\"}"
    httpretty.register_uri(httpretty.POST, client.endpoint, status=201)
    client.create_resource(resource)


@httpretty.activate
def test_delete():
    client = ResourceManagerClient()
    resource = "{\"hostname\":\"resource\"}"
    response_body = '{"_id": "my_id", "_etag":"2341341234"}'
    httpretty.register_uri(httpretty.GET, client.endpoint + "/resource",
                           body=response_body)
    response_body = '{"_id": "my_id"}'
    httpretty.register_uri(httpretty.DELETE, client.endpoint + "/my_id",
                           body=response_body)
    client.delete_resource(resource)


@httpretty.activate
def test_update():
    client = ResourceManagerClient()
    resource = "{\"hostname\":\"resource\"}"
    response_body = '{"_id": "my_id", "_etag":"2341341234"}'
    httpretty.register_uri(httpretty.GET, client.endpoint + "/resource",
                           body=response_body)
    response_body = '{"_id": "my_id"}'
    httpretty.register_uri(httpretty.PATCH, client.endpoint + "/my_id",
                           body=response_body)
    client.update_resource(resource)


@httpretty.activate
def test_find_resources():
    client = ResourceManagerClient()
    field = 'some_field'
    value = 'some_value'
    url = client.endpoint
    response_body = "{\"_items\":[]}"
    httpretty.register_uri(httpretty.GET, url, body=response_body)
    client.find_resources(field, value)


@httpretty.activate
def test_get_all_resources():
    client = ResourceManagerClient()
    url = client.endpoint
    response_body = "{\"_items\":[]}"
    httpretty.register_uri(httpretty.GET, url, body=response_body)
    assert isinstance(client.get_all_resources(), list)
