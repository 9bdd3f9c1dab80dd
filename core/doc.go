// Package core is what the root package and every strategy share about
// data in Redis: the key layout (Keys, ConnKeys), the sentinel errors,
// the state encoding of a conn hash, the metadata hash layout and the
// events as publishers write them. It holds no behaviour beyond encoding
// and decoding: package presence validates and orchestrates, package
// strategy runs heartbeats and mutations, and luacall calls the scripts.
package core
