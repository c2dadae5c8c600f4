"""API clients for tests."""

from rest_framework.test import APIClient

from tests.factories import otp_code


class StepUpAPIClient(APIClient):
    """An authenticated client whose decisions and fills carry a fresh one-time code.

    A JSON body posted to a ``decisions/`` or ``executions/`` endpoint without ``otp_token``
    gets the user's current code, as an official's client would send; a body that names its
    own ``otp_token`` (even an empty one) is sent as it is.
    """

    def __init__(self, user, **kwargs):
        super().__init__(**kwargs)
        self.user = user
        self.force_authenticate(user)

    def post(self, path, data=None, *args, **kwargs):
        steps_up = path.rstrip("/").rsplit("/", 1)[-1] in {"decisions", "executions"}
        if steps_up and isinstance(data, dict) and "otp_token" not in data:
            data = {**data, "otp_token": otp_code(self.user)}
        return super().post(path, data, *args, **kwargs)


def client_for(user) -> StepUpAPIClient:
    return StepUpAPIClient(user)
