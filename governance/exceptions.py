"""Domain errors of the governance app. Each carries a stable ``code`` the API returns."""


class GovernanceError(Exception):
    """A business rule or state conflict: the API answers 409 with ``code`` and ``detail``."""

    code = "governance_error"
    status_code = 409

    def __init_subclass__(cls, *, code: str = "", status_code: int = 0, **kwargs):
        """Subclasses name their code (and, where it differs, status) in the class line."""
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code
        cls.status_code = status_code or cls.status_code

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


class NotPermitted(GovernanceError, code="not_permitted", status_code=403):
    """The user lacks the fund role the action needs (the API answers 403)."""


class SecondFactorRequired(NotPermitted, code="second_factor_required"):
    """The action needs a fresh one-time code and the user has no confirmed TOTP device."""


class SecondFactorInvalid(NotPermitted, code="second_factor_invalid"):
    """The one-time code is missing, wrong, already used or the device is throttled."""


class SegregationOfDuties(GovernanceError, code="segregation_of_duties"):
    """Rule 1: the author never decides on, nor executes, their own proposal."""


class InvalidTransition(GovernanceError, code="invalid_state"):
    """The proposal's state does not allow the action."""


class StageNotCurrent(GovernanceError, code="stage_not_current"):
    """Rule 3: a decision names a stage that is not the proposal's current stage."""


class AlreadyDecided(GovernanceError, code="already_decided"):
    """Rule 2: one person counts once per proposal version."""


class ComplianceBlocked(GovernanceError, code="compliance_blocked"):
    """Rule 8: a pre-trade compliance check blocks the transition."""


class NoPolicyInForce(GovernanceError, code="no_policy_in_force"):
    """The fund has no published approval policy, so nothing can be submitted."""


class PolicyInvalid(GovernanceError, code="policy_invalid"):
    """A policy's stages do not form a usable approval chain."""


class FourEyesRequired(GovernanceError, code="four_eyes_required"):
    """A change that needs a second person was attempted by the same person."""


class ExecutionRefused(GovernanceError, code="execution_refused"):
    """Rule 10: a fill that would break the approved mandate; ``code`` names the rule."""

    def __init__(self, detail: str, *, code: str, context: dict | None = None):
        super().__init__(detail, context=context)
        self.code = code


class DuplicateExternalRef(GovernanceError, code="duplicate_external_ref"):
    """The external reference is already booked against another proposal."""
