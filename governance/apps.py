from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self):
        from alem import encryption
        from governance import (
            account_record,  # noqa: F401  (audits accounts changed directly)
            api_tokens,  # noqa: F401  (revokes tokens on password change)
        )

        encryption.install()
