package reactor

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (a
// reactor not closed, a pool not stopped).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
