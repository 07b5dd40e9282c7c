"""The personal-data contract, run against memory, SQLite and PostgreSQL."""

from tidings.testing import PersonalDataContract


class TestPersonalDataContract(PersonalDataContract):
    """Every test of ``tidings.testing.personal_data.PersonalDataContract``, per backend."""
