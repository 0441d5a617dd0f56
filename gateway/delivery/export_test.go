package delivery

// StopWatch exposes stopWatch to the external tests.
var StopWatch = stopWatch
