from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

PASSWORD = "correct horse battery staple"


@pytest.fixture
def operator(django_user_model: type[User]) -> User:
    """A logged-in-able operator account."""
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def operator_client(client: Client, operator: User) -> Client:
    client.force_login(operator)
    return client
