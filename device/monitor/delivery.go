package monitor

// What a sender needs beyond Drain to follow the controller's answers (an
// AlertAck names the highest Seq recorded, which may lie inside the batch
// sent, or beyond it when the device's state was lost).

// signal makes a coalescing, non-blocking send on c.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Queued returns a channel that receives a value when an event has been
// queued since the last receive (several events make one value). A sender
// waits on it to deliver events soon after they happen; Drain (or Pending)
// then finds them, saved.
func (m *Monitor) Queued() <-chan struct{} { return m.queued }

// Ack drops the queued events whose Seq is at most seq: those the
// controller says it has recorded. Drain already drops a batch its send
// accepts as a whole; Ack is for an answer that covers only part of it.
func (m *Monitor) Ack(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := 0
	for i < len(m.st.Queue) && m.st.Queue[i].Seq <= seq {
		i++
	}
	if i == 0 {
		return nil
	}
	m.st.Queue = append(m.st.Queue[:0], m.st.Queue[i:]...)
	m.dirty = true
	return m.saveLocked()
}

// Resequence renumbers the queued events, and every later one, above seq
// when seq is beyond the Monitor's own counter, and reports whether it did.
// The controller records only events above the last Seq it has for the
// device; an answer naming a Seq this Monitor never issued means the
// device's state was lost (a new state file, a re-flashed device), and its
// events would be skipped as replays until its counter caught up. A seq
// within the counter is an acknowledgement: see Ack.
func (m *Monitor) Resequence(seq uint64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq <= m.st.Seq {
		return false, nil
	}
	for i := range m.st.Queue {
		seq++
		m.st.Queue[i].Seq = seq
	}
	m.st.Seq = seq
	m.dirty = true
	return true, m.saveLocked()
}
