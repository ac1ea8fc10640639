"""The Fabric consortium: definition, identities, channels, node processes, chaincode deployment."""
