from connectors.synthetic import SyntheticConfig, SyntheticConnector
from tests.contract.suite import connector_contract_tests

TestSyntheticContract = connector_contract_tests(
    lambda: SyntheticConnector(SyntheticConfig(count=300, checkpoint_every=50))
)
