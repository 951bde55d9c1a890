package engine

// evictForTest drops every idle cached prompt, from the test goroutine, while
// the engine is idle.
func (e *Engine) evictForTest() { e.evictIdle() }
