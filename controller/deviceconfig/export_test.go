package deviceconfig

// Encrypt is the tests' age encryption, for the external test package.
var Encrypt = encrypt
