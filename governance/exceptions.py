"""Domain errors of the governance app. Each carries a stable ``code`` the API returns."""


class GovernanceError(Exception):
    """A business rule or state conflict: the API answers 409 with ``code`` and ``detail``."""

    code = "governance_error"
    status_code = 409

    def __init__(self, detail: str, *, context: dict | None = None, reason: str = ""):
        super().__init__(detail)
        self.detail = detail
        self.context = context or {}
        self._reason = reason

    @property
    def reason(self) -> str:
        """What the pages key their explanation on: the code, unless the refusal says more
        (the approver who may not execute, say, refused as ``segregation_of_duties``)."""
        return self._reason or self.code


class NotPermitted(GovernanceError):
    """The user lacks the fund role the action needs (the API answers 403)."""

    code = "not_permitted"
    status_code = 403


class SecondFactorRequired(NotPermitted):
    """The action needs a fresh one-time code and the user has no confirmed TOTP device."""

    code = "second_factor_required"


class SecondFactorInvalid(NotPermitted):
    """The one-time code is missing, wrong, already used or the device is throttled."""

    code = "second_factor_invalid"


class SegregationOfDuties(GovernanceError):
    """Rule 1: the author never decides on, nor executes, their own proposal."""

    code = "segregation_of_duties"


class InvalidTransition(GovernanceError):
    """The proposal's state does not allow the action."""

    code = "invalid_state"


class StageNotCurrent(GovernanceError):
    """Rule 3: a decision names a stage that is not the proposal's current stage."""

    code = "stage_not_current"


class AlreadyDecided(GovernanceError):
    """Rule 2: one person counts once per proposal version."""

    code = "already_decided"


class ComplianceBlocked(GovernanceError):
    """Rule 8: a pre-trade compliance check blocks the transition."""

    code = "compliance_blocked"


class NoPolicyInForce(GovernanceError):
    """The fund has no published approval policy, so nothing can be submitted."""

    code = "no_policy_in_force"


class PolicyInvalid(GovernanceError):
    """A policy's stages do not form a usable approval chain."""

    code = "policy_invalid"


class FourEyesRequired(GovernanceError):
    """A change that needs a second person was attempted by the same person."""

    code = "four_eyes_required"


class ExecutionRefused(GovernanceError):
    """Rule 10: a fill that would break the approved mandate; ``code`` names the rule."""

    code = "execution_refused"

    def __init__(self, detail: str, *, code: str, context: dict | None = None):
        super().__init__(detail, context=context)
        self.code = code


class DuplicateExternalRef(GovernanceError):
    """The external reference is already booked against another proposal."""

    code = "duplicate_external_ref"
