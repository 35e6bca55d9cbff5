package password

import (
	_ "embed"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// Policy limits, in characters (runes), not bytes.
const (
	MinLength = 8
	MaxLength = 128
)

// commonPasswordsFile holds one lower-case password a line; lines starting
// with '#' are comments (the header names its source and licence).
//
//go:embed common-passwords.txt
var commonPasswordsFile string

// commonPasswords is the set of commonPasswordsFile's entries, built on
// first use.
var commonPasswords = sync.OnceValue(func() map[string]struct{} {
	return parseList(commonPasswordsFile)
})

func parseList(text string) map[string]struct{} {
	set := make(map[string]struct{}, strings.Count(text, "\n")+1)
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[line] = struct{}{}
	}
	return set
}

// isCommon reports whether password is on the common-password list, ignoring
// case.
func isCommon(password string) bool {
	_, ok := commonPasswords()[strings.ToLower(password)]
	return ok
}

// Check enforces the password policy for registration and password changes.
// It returns an *apperr.Error with CodeInvalidArgument and Field fieldName
// (e.g. "password" or "new_password") when password
//   - is shorter than MinLength or longer than MaxLength characters,
//   - equals the email address or its local part (ignoring case), or
//   - is one of the 10,000 most common passwords (ignoring case).
//
// email may be empty, which skips that rule.
func Check(fieldName, password, email string) error {
	n := utf8.RuneCountInString(password)
	switch {
	case n < MinLength:
		return apperr.InvalidArgument(fieldName, "must be at least %d characters long", MinLength)
	case n > MaxLength:
		return apperr.InvalidArgument(fieldName, "must be at most %d characters long", MaxLength)
	}
	if email = strings.TrimSpace(email); email != "" {
		local := email
		if at := strings.LastIndexByte(email, '@'); at >= 0 {
			local = email[:at]
		}
		if strings.EqualFold(password, email) || (local != "" && strings.EqualFold(password, local)) {
			return apperr.InvalidArgument(fieldName, "must not be your email address or the part of it before the @")
		}
	}
	if isCommon(password) {
		return apperr.InvalidArgument(fieldName, "is too common and easy to guess; choose a less common password")
	}
	return nil
}
