from decimal import Decimal

from governance.models import ProposalState


def test_large_proposal_passes_all_three_stages_to_approval(alem):
    proposal = alem.proposal(notional_usd=Decimal("2000000.00"), submit=True)
    assert proposal.state == ProposalState.IN_REVIEW
    assert proposal.current_stage.order == 1

    approved = alem.approve_fully(proposal)

    assert approved.state == ProposalState.APPROVED
    assert approved.current_stage is None
    assert approved.decisions.count() == 4
