package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"sync"
	"time"
)

// maxDeploymentLog bounds the deployment log file; lines past it are
// dropped (the first lines, which hold the first error, are kept).
const maxDeploymentLog = 256 << 10

// deploymentLog is the log of the deployment in progress, kept in a file so
// that it survives reboots and can be uploaded with a failure. It is not
// synced: losing its last lines in a power cut is acceptable.
type deploymentLog struct {
	path string
	mu   sync.Mutex
}

func (l *deploymentLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	os.Remove(l.path)
}

func (l *deploymentLog) append(t time.Time, level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fi, err := os.Stat(l.path); err == nil && fi.Size() > maxDeploymentLog {
		return
	}
	b, err := json.Marshal(LogMessage{Timestamp: t.UTC().Format(time.RFC3339Nano), Level: level, Message: msg})
	if err != nil {
		return
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	f.Write(append(b, '\n'))
	f.Close()
}

func (l *deploymentLog) messages() []LogMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := readFileBounded(l.path, 2*maxDeploymentLog)
	if err != nil {
		return nil
	}
	var out []LogMessage
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m LogMessage
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
