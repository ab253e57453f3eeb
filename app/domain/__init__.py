"""Rules of money and wallets. Standard library only."""
