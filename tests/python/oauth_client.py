"""A stock OAuth 2.0 client against the gateway, as an internal service would use it.

Authlib reads the RFC 8414 metadata, gets a token from its token_endpoint by the
client-credentials grant with client_secret_basic and with client_secret_post, calls the API with
it, and introspects it at introspection_endpoint (RFC 7662); a wrong secret must raise OAuthError
invalid_client. PyJWT verifies each token with the keys at jwks_uri and checks that its `iss` is
the metadata's issuer.

usage: oauth_client.py <gateway-url> <client-id> <client-secret> <audience>
Exits non-zero with a message on the first failed check.
"""

import os
import sys

# The test's gateway listens on plain http at 127.0.0.1; Authlib refuses http endpoints without
# this.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

import jwt  # noqa: E402
import requests  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session, OAuthError  # noqa: E402
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata  # noqa: E402

TIMEOUT = 10
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def metadata(base):
    url = base + "/.well-known/oauth-authorization-server"
    response = requests.get(url, timeout=TIMEOUT)
    check(response.status_code == 200, f"{url} answered {response.status_code}: {response.text}")
    document = AuthorizationServerMetadata(response.json())
    # Authlib's validate() also wants a non-empty response_types_supported, but with no
    # authorization endpoint the list RFC 8414 requires is empty; every other member is checked
    # as Authlib checks it.
    for member in (
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "scopes_supported",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
    ):
        getattr(document, "validate_" + member)()
    check(document["response_types_supported"] == [], "response types are advertised")
    check("client_credentials" in document["grant_types_supported"], "no client_credentials grant")
    for method in AUTH_METHODS:
        check(method in document["token_endpoint_auth_methods_supported"], f"no {method}")
        check(method in document["introspection_endpoint_auth_methods_supported"], f"no {method}")
    check("revocation_endpoint" not in document, "a revocation endpoint that does not exist")
    return document


def verify(access_token, document, audience, client_id):
    """The token's signature with the keys at jwks_uri, and its issuer, audience and subject."""
    key = jwt.PyJWKClient(document["jwks_uri"]).get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token,
        key,
        algorithms=["EdDSA"],
        issuer=document["issuer"],
        audience=audience,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    check(claims["iss"] == document["issuer"], f"iss {claims['iss']} is not the issuer")
    check(claims["sub"] == "sa:" + client_id, f"sub {claims['sub']}")
    check(claims.get("client_id") == client_id, f"client_id claim {claims.get('client_id')}")


def main():
    base, client_id, client_secret, audience = sys.argv[1:5]
    document = metadata(base)
    check(document["issuer"] == base, f"issuer {document['issuer']} is not {base}")

    for method in AUTH_METHODS:
        client = OAuth2Session(client_id, client_secret, token_endpoint_auth_method=method)
        token = client.fetch_token(document["token_endpoint"], grant_type="client_credentials")
        check(token["token_type"] == "Bearer", f"{method}: token_type {token['token_type']}")
        check(token["expires_in"] > 0, f"{method}: expires_in {token['expires_in']}")
        check(token.get("scope"), f"{method}: no scope")
        verify(token["access_token"], document, audience, client_id)

        # The session sends its token as a Bearer token.
        persons = client.get(base + "/api/persons", timeout=TIMEOUT)
        check(persons.status_code == 200, f"{method}: /api/persons {persons.status_code}")

        introspected = client.introspect_token(
            document["introspection_endpoint"],
            token=token["access_token"],
            token_type_hint="access_token",
            timeout=TIMEOUT,
        )
        check(introspected.status_code == 200, f"{method}: introspection {introspected.text}")
        answer = introspected.json()
        check(answer.get("active") is True, f"{method}: not active: {answer}")
        check(answer.get("client_id") == client_id, f"{method}: client_id in {answer}")
        check(answer.get("iss") == document["issuer"], f"{method}: iss in {answer}")
        check(
            introspected.headers.get("Cache-Control") == "no-store",
            f"{method}: introspection cacheable",
        )

        wrong = OAuth2Session(client_id, "not-the-secret", token_endpoint_auth_method=method)
        try:
            wrong.fetch_token(document["token_endpoint"], grant_type="client_credentials")
        except OAuthError as error:
            check(error.error == "invalid_client", f"{method}: wrong secret: {error.error}")
        else:
            raise AssertionError(f"{method}: a wrong secret got a token")
        print(f"{method}: token, API call, introspection, JWKS check and refusal passed")

    print("oauth client passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # one line that says what failed, then the traceback
        print(f"oauth client failed: {type(error).__name__}: {error}", file=sys.stderr)
        raise
