//! A small backtracking regular expression matcher for the LIKE/UNLIKE constraints (the workspace has no regex
//! crate). It supports what constraint values use in practice: literals, `.`, classes `[a-z0-9_]` / `[^...]`,
//! `\d \w \s` and escaped metacharacters, groups `( )`, alternation `|`, and the quantifiers `* + ?` and
//! `{n}`, `{n,}`, `{n,m}`. Matching is whole-string, as Java's `String.matches`, which Marathon uses.

#[derive(Clone, Debug, PartialEq)]
enum Atom {
    Char(char),
    Any,
    Class { ranges: Vec<(char, char)>, negated: bool },
    Group(Box<Alt>),
}

#[derive(Clone, Debug, PartialEq)]
struct Piece {
    atom: Atom,
    min: usize,
    max: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
struct Alt(Vec<Vec<Piece>>);

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Regex {
    alt: Alt,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn alt(&mut self) -> Result<Alt, String> {
        let mut branches = vec![self.seq()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.seq()?);
        }
        Ok(Alt(branches))
    }

    fn seq(&mut self) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let (min, max) = self.quantifier()?;
            pieces.push(Piece { atom, min, max });
        }
        Ok(pieces)
    }

    fn escape(&mut self) -> Result<Atom, String> {
        let c = self.next().ok_or("trailing backslash")?;
        Ok(match c {
            'd' => Atom::Class { ranges: DIGIT.to_vec(), negated: false },
            'D' => Atom::Class { ranges: DIGIT.to_vec(), negated: true },
            'w' => Atom::Class { ranges: WORD.to_vec(), negated: false },
            'W' => Atom::Class { ranges: WORD.to_vec(), negated: true },
            's' => Atom::Class { ranges: SPACE.to_vec(), negated: false },
            'S' => Atom::Class { ranges: SPACE.to_vec(), negated: true },
            c if c.is_ascii_alphanumeric() => return Err(format!("unsupported escape \\{c}")),
            c => Atom::Char(c),
        })
    }

    fn atom(&mut self) -> Result<Atom, String> {
        match self.next().ok_or("unexpected end")? {
            '.' => Ok(Atom::Any),
            '\\' => self.escape(),
            '(' => {
                if self.peek() == Some('?') {
                    self.pos += 1;
                    if self.next() != Some(':') {
                        return Err("only (?: ) groups are supported".into());
                    }
                }
                let alt = self.alt()?;
                if self.next() != Some(')') {
                    return Err("unclosed group".into());
                }
                Ok(Atom::Group(Box::new(alt)))
            }
            '[' => self.class(),
            c @ ('*' | '+' | '?' | '{' | ')' | ']') => Err(format!("unexpected '{c}'")),
            '^' | '$' => Ok(Atom::Group(Box::new(Alt(vec![vec![]])))),
            c => Ok(Atom::Char(c)),
        }
    }

    fn class(&mut self) -> Result<Atom, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.next().ok_or("unclosed class")?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape()? {
                    Atom::Char(c) => c,
                    Atom::Class { ranges: r, negated: false } => {
                        ranges.extend(r);
                        continue;
                    }
                    _ => return Err("negated escapes are not supported inside classes".into()),
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|c| *c != ']') {
                self.pos += 1;
                let hi = self.next().ok_or("unclosed class")?;
                if hi < lo {
                    return Err("bad class range".into());
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Atom::Class { ranges, negated })
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect::<String>().parse().ok()
    }

    fn quantifier(&mut self) -> Result<(usize, Option<usize>), String> {
        let q = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                let min = self.number().ok_or("bad repetition")?;
                let max = if self.peek() == Some(',') {
                    self.pos += 1;
                    if self.peek() == Some('}') { None } else { Some(self.number().ok_or("bad repetition")?) }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') || max.is_some_and(|m| m < min) {
                    return Err("bad repetition".into());
                }
                self.pos += 1;
                return Ok((min, max));
            }
            _ => return Ok((1, Some(1))),
        };
        self.pos += 1;
        Ok(q)
    }
}

fn atom_matches(atom: &Atom, c: char) -> bool {
    match atom {
        Atom::Char(x) => *x == c,
        Atom::Any => c != '\n',
        Atom::Class { ranges, negated } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        Atom::Group(_) => false,
    }
}

fn match_alt(alt: &Alt, s: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    alt.0.iter().any(|seq| match_seq(seq, s, pos, k))
}

fn match_seq(seq: &[Piece], s: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match seq.split_first() {
        None => k(pos),
        Some((piece, rest)) => match_piece(piece, 0, rest, s, pos, k),
    }
}

/// Greedy repetition with backtracking: after `count` repetitions at `pos`, try one more, then the rest.
fn match_piece(
    piece: &Piece,
    count: usize,
    rest: &[Piece],
    s: &[char],
    pos: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if piece.max.is_none_or(|m| count < m) {
        let more = match &piece.atom {
            Atom::Group(alt) => match_alt(alt, s, pos, &mut |p| {
                // An empty iteration cannot make progress; stop repeating to avoid looping.
                p != pos && match_piece(piece, count + 1, rest, s, p, k)
            }),
            atom => pos < s.len() && atom_matches(atom, s[pos]) && match_piece(piece, count + 1, rest, s, pos + 1, k),
        };
        if more {
            return true;
        }
    }
    if count >= piece.min {
        return match_seq(rest, s, pos, k);
    }
    // A group that matched empty can satisfy the remaining minimum.
    if let Atom::Group(alt) = &piece.atom {
        return match_alt(alt, s, pos, &mut |p| p == pos && match_seq(rest, s, pos, k));
    }
    false
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let mut p = Parser { chars: pattern.chars().collect(), pos: 0, _src: pattern };
        let alt = p.alt()?;
        if p.pos < p.chars.len() {
            return Err(format!("unexpected '{}'", p.chars[p.pos]));
        }
        Ok(Regex { alt })
    }

    /// Whether the whole of `text` matches.
    pub fn is_full_match(&self, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        match_alt(&self.alt, &s, 0, &mut |p| p == s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().is_full_match(t)
    }

    #[test]
    fn matches_like_java_matches() {
        assert!(m("rack-[1-3]", "rack-2"));
        assert!(!m("rack-[1-3]", "rack-4"));
        assert!(!m("rack-[1-3]", "rack-22"), "whole string");
        assert!(m("agent.*", "agent12"));
        assert!(m("a|b|c", "b"));
        assert!(m("(ab)+c", "ababc"));
        assert!(!m("(ab)+c", "c"));
        assert!(m("x\\.y", "x.y"));
        assert!(!m("x\\.y", "xzy"));
        assert!(m("[^a-c]\\d{2,3}", "z123"));
        assert!(!m("[^a-c]\\d{2,3}", "a12"));
        assert!(m("(a*)*b", "aaab"));
        assert!(m("colou?r", "color"));
        assert!(m("", ""));
    }

    #[test]
    fn rejects_broken_patterns() {
        for p in ["(", "[a-", "*", "a{2", "\\q", "a)"] {
            assert!(Regex::new(p).is_err(), "{p}");
        }
    }
}
