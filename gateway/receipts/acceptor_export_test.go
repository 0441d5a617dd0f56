package receipts

// Holding reports how many receipts wait for Hold at this moment.
func (a *Acceptor) Holding() int { return int(a.holding.Load()) }
