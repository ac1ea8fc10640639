"""The `careledger` command and the demo it runs: the top of the house, importing every part below."""
