//! The `filter` of list and watch requests: a subset of AIP-160.
//!
//! ```text
//! filter      := [or]
//! or          := and { "OR" and }
//! and         := unary { ["AND"] unary }          juxtaposition is AND
//! unary       := ("NOT" | "-") unary | "(" or ")" | restriction
//! restriction := path ("=" | "!=" | "<" | "<=" | ">" | ">=" | ":") value
//!              | path ["NOT"] "IN" "(" value { "," value } ")"
//! value       := "quoted" | 'quoted' | bare-word | number | "*" (after ":")
//! ```
//!
//! Precedence is NOT > AND > OR, the order SQL users expect (AIP-160's own
//! grammar binds OR tighter than AND; the API contract chose the familiar
//! one). Every literal is typed against its field when parsing, so
//! `spec.logging_config.priority >= "abc"` fails the request instead of
//! silently matching nothing, and [`Filter::matches`] cannot fail.

use std::cmp::Ordering;
use std::fmt;

use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value};

use super::InvalidArgument;
use super::field_path::{FieldPath, Shape, display_map_key, kind_name, parse_map_key};
use super::translate::PathTranslation;

const FIELD: &str = "filter";

/// Deepest nesting of parentheses and negations. Parsing, evaluation and
/// dropping are recursive; the bound keeps hostile input off the stack limit.
const MAX_DEPTH: usize = 64;

/// A parsed, type-checked filter. The empty filter matches everything.
#[derive(Clone, Debug)]
pub struct Filter {
    expr: Expr,
}

#[derive(Clone, Debug)]
enum Expr {
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        path: FieldPath,
        op: CompareOp,
        literal: Literal,
    },
    In {
        path: FieldPath,
        literals: Vec<Literal>,
        negated: bool,
    },
    Has {
        path: FieldPath,
        target: HasTarget,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The right-hand side of `:`.
#[derive(Clone, Debug)]
enum HasTarget {
    /// `x:*`: set (messages, map keys), non-default (scalars), non-empty
    /// (lists, maps).
    Present,
    /// `units:sshd`: some element equals the value.
    Element(Literal),
    /// `labels:env`: the map has the key.
    Key(MapKey),
    /// `name:foo` on a singular field is equality (AIP-160).
    Equals(Literal),
}

/// A literal already converted to its field's type.
#[derive(Clone, Debug)]
enum Literal {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Enum {
        number: i32,
        name: Option<String>,
    },
    /// A google.protobuf.Timestamp or Duration; `text` is its canonical form.
    Seconds {
        seconds: i64,
        nanos: i32,
        text: String,
    },
}

impl Filter {
    /// Parses and type-checks `text` against `descriptor`. Empty or
    /// whitespace-only text matches everything.
    pub fn parse(text: &str, descriptor: &MessageDescriptor) -> Result<Filter, InvalidArgument> {
        let tokens = lex(text).map_err(|e| e.into_invalid(text))?;
        let mut parser = Parser {
            text,
            tokens,
            next: 0,
            depth: 0,
            descriptor,
        };
        let expr = parser.parse_filter().map_err(|e| e.into_invalid(text))?;
        Ok(Filter { expr })
    }

    /// Whether `msg` passes. A comparison whose field is missing (an unset
    /// message on the way, an absent map key) is false, except `!=` and
    /// `NOT IN`, which are true: the missing value differs from anything.
    pub fn matches(&self, msg: &DynamicMessage) -> bool {
        self.expr.matches(msg)
    }

    /// True for the empty filter.
    pub fn is_match_all(&self) -> bool {
        matches!(self.expr, Expr::All)
    }
}

impl Filter {
    /// This filter's text with every field path (and string literals
    /// compared with paths whose values change, such as names) rewritten by
    /// `translation`: the same filter in another API version, to be parsed
    /// against that version's descriptor.
    pub fn translate(&self, translation: &dyn PathTranslation) -> Result<String, String> {
        let mut out = String::new();
        self.expr.translate_into(translation, &mut out)?;
        Ok(out)
    }
}

impl Expr {
    fn translate_into(&self, t: &dyn PathTranslation, out: &mut String) -> Result<(), String> {
        let operand = |e: &Expr, out: &mut String| -> Result<(), String> {
            if e.is_compound() {
                out.push('(');
                e.translate_into(t, out)?;
                out.push(')');
                Ok(())
            } else {
                e.translate_into(t, out)
            }
        };
        let literal = |path: &str, l: &Literal| match l {
            Literal::Str(s) => quote(&t.string_value(path, s)),
            other => other.to_string(),
        };
        match self {
            Expr::All => {}
            Expr::And(terms) | Expr::Or(terms) => {
                let joiner = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, term) in terms.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    operand(term, out)?;
                }
            }
            Expr::Not(inner) => {
                out.push_str("NOT ");
                operand(inner, out)?;
            }
            Expr::Compare {
                path,
                op,
                literal: l,
            } => {
                let source = path.to_string();
                let target = t.path(&source)?;
                out.push_str(&format!("{target} {} {}", op.symbol(), literal(&source, l)));
            }
            Expr::In {
                path,
                literals,
                negated,
            } => {
                let source = path.to_string();
                let target = t.path(&source)?;
                let list: Vec<String> = literals.iter().map(|l| literal(&source, l)).collect();
                let operator = if *negated { "NOT IN" } else { "IN" };
                out.push_str(&format!("{target} {operator} ({})", list.join(", ")));
            }
            Expr::Has { path, target } => {
                let source = path.to_string();
                let mapped = t.path(&source)?;
                let rhs = match target {
                    HasTarget::Present => "*".to_owned(),
                    HasTarget::Element(l) | HasTarget::Equals(l) => literal(&source, l),
                    HasTarget::Key(MapKey::String(key)) => quote(key),
                    HasTarget::Key(key) => display_map_key(key).to_string(),
                };
                out.push_str(&format!("{mapped}:{rhs}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Filter {
    /// A canonical rendering that parses back to the same filter: paths
    /// spelled canonically, strings double-quoted, and compound operands
    /// parenthesized so the grouping is explicit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl Expr {
    fn matches(&self, msg: &DynamicMessage) -> bool {
        match self {
            Expr::All => true,
            Expr::And(terms) => terms.iter().all(|t| t.matches(msg)),
            Expr::Or(terms) => terms.iter().any(|t| t.matches(msg)),
            Expr::Not(inner) => !inner.matches(msg),
            Expr::Compare { path, op, literal } => {
                let ordering = path.value(msg).and_then(|v| compare(&v, literal));
                op.holds(ordering)
            }
            Expr::In {
                path,
                literals,
                negated,
            } => {
                let found = path.value(msg).is_some_and(|v| {
                    literals
                        .iter()
                        .any(|l| compare(&v, l) == Some(Ordering::Equal))
                });
                found != *negated
            }
            Expr::Has { path, target } => {
                let Some(value) = path.value(msg) else {
                    return false;
                };
                match target {
                    HasTarget::Present => match value.as_ref() {
                        Value::List(items) => !items.is_empty(),
                        Value::Map(map) => !map.is_empty(),
                        Value::Message(_) => true,
                        scalar => {
                            path.ends_at_map_key()
                                || match path.shape() {
                                    Shape::Single(kind) | Shape::Repeated(kind) => {
                                        !scalar.is_default(kind)
                                    }
                                    Shape::Map { .. } => true,
                                }
                        }
                    },
                    HasTarget::Element(literal) => value.as_list().is_some_and(|items| {
                        items
                            .iter()
                            .any(|i| compare(i, literal) == Some(Ordering::Equal))
                    }),
                    HasTarget::Key(key) => value.as_map().is_some_and(|map| map.contains_key(key)),
                    HasTarget::Equals(literal) => compare(&value, literal) == Some(Ordering::Equal),
                }
            }
        }
    }

    fn is_compound(&self) -> bool {
        matches!(self, Expr::And(_) | Expr::Or(_))
    }
}

impl CompareOp {
    /// `ordering` is `None` when the value is missing or incomparable (NaN).
    fn holds(self, ordering: Option<Ordering>) -> bool {
        match (self, ordering) {
            (CompareOp::Ne, None) => true,
            (_, None) => false,
            (CompareOp::Eq, Some(o)) => o.is_eq(),
            (CompareOp::Ne, Some(o)) => o.is_ne(),
            (CompareOp::Lt, Some(o)) => o.is_lt(),
            (CompareOp::Le, Some(o)) => o.is_le(),
            (CompareOp::Gt, Some(o)) => o.is_gt(),
            (CompareOp::Ge, Some(o)) => o.is_ge(),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::Ne)
    }
}

/// Orders a stored value against a literal of the same type; `None` when
/// the types differ (only possible if the message is not of the filter's
/// type) or a float is NaN.
fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::I32(a), Literal::Int(b)) => Some(i64::from(*a).cmp(b)),
        (Value::I64(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Value::U32(a), Literal::UInt(b)) => Some(u64::from(*a).cmp(b)),
        (Value::U64(a), Literal::UInt(b)) => Some(a.cmp(b)),
        // Compare in the field's precision, so `ratio = 0.1` finds a
        // float field holding 0.1f32.
        (Value::F32(a), Literal::Float(b)) => a.partial_cmp(&(*b as f32)),
        (Value::F64(a), Literal::Float(b)) => a.partial_cmp(b),
        (Value::String(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::EnumNumber(a), Literal::Enum { number, .. }) => Some(a.cmp(number)),
        (Value::Message(m), Literal::Seconds { seconds, nanos, .. }) => {
            let s = m.get_field_by_name("seconds")?.as_i64()?;
            let n = m.get_field_by_name("nanos")?.as_i32()?;
            Some((s, n).cmp(&(*seconds, *nanos)))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- lexing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Colon,
    Op(CompareOp),
    Minus,
    Quoted(String),
    Word(String),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// Byte offset in the filter text.
    pos: usize,
}

/// A parse error at a byte offset; turned into a column for the caller.
struct SyntaxError {
    pos: usize,
    message: String,
}

impl SyntaxError {
    fn new(pos: usize, message: impl Into<String>) -> Self {
        SyntaxError {
            pos,
            message: message.into(),
        }
    }

    fn into_invalid(self, text: &str) -> InvalidArgument {
        InvalidArgument::new(
            FIELD,
            format!("column {}: {}", column(text, self.pos), self.message),
        )
    }
}

/// The 1-based character column of a byte offset, as editors show it.
fn column(text: &str, pos: usize) -> usize {
    text.get(..pos).map_or(0, |prefix| prefix.chars().count()) + 1
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '(' | ')' | ',' | ':' | '=' | '!' | '<' | '>' | '"' | '\''
        )
}

fn lex(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        let single = |tok| Token { tok, pos };
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' | ':' => {
                chars.next();
                tokens.push(single(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    _ => Tok::Colon,
                }));
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let followed_by_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
                let op = match (c, followed_by_eq) {
                    ('=', _) => CompareOp::Eq,
                    ('!', true) => CompareOp::Ne,
                    ('!', false) => {
                        return Err(SyntaxError::new(pos, "unexpected '!'; use != or NOT"));
                    }
                    ('<', true) => CompareOp::Le,
                    ('<', false) => CompareOp::Lt,
                    ('>', true) => CompareOp::Ge,
                    _ => CompareOp::Gt,
                };
                if followed_by_eq && c != '=' {
                    chars.next();
                }
                tokens.push(single(Tok::Op(op)));
            }
            '"' | '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(SyntaxError::new(pos, "unterminated string")),
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => match chars.next() {
                            None => return Err(SyntaxError::new(pos, "unterminated string")),
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, 't')) => value.push('\t'),
                            Some((_, 'r')) => value.push('\r'),
                            Some((_, other)) => value.push(other),
                        },
                        Some((_, other)) => value.push(other),
                    }
                }
                tokens.push(single(Tok::Quoted(value)));
            }
            _ => {
                // `-` negates, unless it starts a negative number.
                if c == '-' {
                    let mut ahead = text.get(pos + 1..).unwrap_or("").chars();
                    if !ahead.next().is_some_and(|n| n.is_ascii_digit() || n == '.') {
                        chars.next();
                        tokens.push(single(Tok::Minus));
                        continue;
                    }
                }
                let mut word = String::new();
                while let Some(&(_, w)) = chars.peek() {
                    if w == '`' {
                        // A quoted map key: everything up to the closing backtick.
                        word.push(w);
                        chars.next();
                        loop {
                            match chars.next() {
                                None => return Err(SyntaxError::new(pos, "unterminated backtick")),
                                Some((_, '`')) => {
                                    word.push('`');
                                    break;
                                }
                                Some((_, inner)) => word.push(inner),
                            }
                        }
                    } else if is_word_char(w) {
                        word.push(w);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(single(Tok::Word(word)));
            }
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(tokens)
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::LParen => "\"(\"".to_owned(),
        Tok::RParen => "\")\"".to_owned(),
        Tok::Comma => "\",\"".to_owned(),
        Tok::Colon => "\":\"".to_owned(),
        Tok::Op(op) => format!("{:?}", op.symbol()),
        Tok::Minus => "\"-\"".to_owned(),
        Tok::Quoted(s) => format!("string {s:?}"),
        Tok::Word(w) => format!("{w:?}"),
        Tok::End => "the end of the filter".to_owned(),
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(word, "AND" | "OR" | "NOT" | "IN")
}

// ---------------------------------------------------------------- parsing

/// A value as written, before typing against its field.
struct RawLiteral {
    text: String,
    quoted: bool,
    pos: usize,
}

impl fmt::Display for RawLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "{:?}", self.text)
        } else {
            f.write_str(&self.text)
        }
    }
}

struct Parser<'d> {
    text: &'d str,
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    descriptor: &'d MessageDescriptor,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // `lex` always ends the list with `End`, and `advance` never passes it.
        static END: Token = Token {
            tok: Tok::End,
            pos: 0,
        };
        self.tokens.get(self.next).unwrap_or(&END)
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w == word)
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.next += 1;
        }
        token
    }

    fn parse_filter(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek().tok == Tok::End {
            return Ok(Expr::All);
        }
        let expr = self.parse_or()?;
        let token = self.peek();
        match &token.tok {
            Tok::End => Ok(expr),
            Tok::RParen => Err(SyntaxError::new(token.pos, "unmatched \")\"")),
            other => Err(SyntaxError::new(
                token.pos,
                format!("unexpected {}", describe(other)),
            )),
        }
    }

    fn parse_or(&mut self) -> Result<Expr, SyntaxError> {
        let mut terms = vec![self.parse_and()?];
        while self.peek_word("OR") {
            self.advance();
            terms.push(self.parse_and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, SyntaxError> {
        let mut terms = vec![self.parse_unary()?];
        loop {
            match &self.peek().tok {
                Tok::Word(w) if w == "AND" => {
                    self.advance();
                    terms.push(self.parse_unary()?);
                }
                Tok::Word(w) if w == "OR" => break,
                Tok::RParen | Tok::End => break,
                // Juxtaposition: `a b` means `a AND b`.
                _ => terms.push(self.parse_unary()?),
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn parse_unary(&mut self) -> Result<Expr, SyntaxError> {
        let token = self.peek().clone();
        let nested = matches!(&token.tok, Tok::Minus | Tok::LParen)
            || matches!(&token.tok, Tok::Word(w) if w == "NOT");
        if !nested {
            return self.parse_restriction();
        }
        if self.depth >= MAX_DEPTH {
            return Err(SyntaxError::new(
                token.pos,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        self.advance();
        let result = if token.tok == Tok::LParen {
            self.parse_or().and_then(|inner| {
                let close = self.advance();
                match close.tok {
                    Tok::RParen => Ok(inner),
                    other => Err(SyntaxError::new(
                        close.pos,
                        format!(
                            "expected \")\" to close the \"(\" at column {}, found {}",
                            column(self.text, token.pos),
                            describe(&other)
                        ),
                    )),
                }
            })
        } else {
            self.parse_unary().map(|inner| Expr::Not(Box::new(inner)))
        };
        self.depth -= 1;
        result
    }

    fn parse_restriction(&mut self) -> Result<Expr, SyntaxError> {
        let token = self.advance();
        let path_text = match &token.tok {
            Tok::Word(w) if !is_keyword(w) => w.clone(),
            other => {
                return Err(SyntaxError::new(
                    token.pos,
                    format!("expected a field path, found {}", describe(other)),
                ));
            }
        };
        let path = FieldPath::parse_for_filter(&path_text, self.descriptor)
            .map_err(|message| SyntaxError::new(token.pos, message))?;
        let op_token = self.advance();
        match op_token.tok {
            Tok::Op(op) => {
                let raw = self.expect_value(&op_token)?;
                comparison(path, op, op_token.pos, raw)
            }
            Tok::Colon => {
                if matches!(&self.peek().tok, Tok::Word(w) if w == "*") {
                    self.advance();
                    return Ok(Expr::Has {
                        path,
                        target: HasTarget::Present,
                    });
                }
                let raw = self.expect_value(&op_token)?;
                self.has(path, raw)
            }
            Tok::Word(ref w) if w == "IN" => self.in_list(path, false, op_token.pos),
            Tok::Word(ref w) if w == "NOT" && self.peek_word("IN") => {
                self.advance();
                self.in_list(path, true, op_token.pos)
            }
            other => Err(SyntaxError::new(
                op_token.pos,
                format!(
                    "expected an operator (= != < <= > >= : IN NOT IN) after {path}, found {}",
                    describe(&other)
                ),
            )),
        }
    }

    fn expect_value(&mut self, after: &Token) -> Result<RawLiteral, SyntaxError> {
        let token = self.advance();
        match token.tok {
            Tok::Quoted(text) => Ok(RawLiteral {
                text,
                quoted: true,
                pos: token.pos,
            }),
            Tok::Word(text) if !is_keyword(&text) => Ok(RawLiteral {
                text,
                quoted: false,
                pos: token.pos,
            }),
            other => Err(SyntaxError::new(
                token.pos,
                format!(
                    "expected a value after {}, found {}",
                    describe(&after.tok),
                    describe(&other)
                ),
            )),
        }
    }

    fn has(&self, path: FieldPath, raw: RawLiteral) -> Result<Expr, SyntaxError> {
        let target = match path.shape() {
            Shape::Single(kind) => HasTarget::Equals(typed(&raw, kind, &path)?),
            Shape::Repeated(kind) => HasTarget::Element(typed(&raw, kind, &path)?),
            Shape::Map { key, .. } => match parse_map_key(&raw.text, key) {
                Some(key) => HasTarget::Key(key),
                None => {
                    return Err(SyntaxError::new(
                        raw.pos,
                        format!(
                            "{raw} is not a valid key of {path} (keys are {})",
                            kind_name(key)
                        ),
                    ));
                }
            },
        };
        Ok(Expr::Has { path, target })
    }

    fn in_list(&mut self, path: FieldPath, negated: bool, pos: usize) -> Result<Expr, SyntaxError> {
        let operator = if negated { "NOT IN" } else { "IN" };
        let kind = single_kind(&path, operator, pos)?;
        let open = self.advance();
        if open.tok != Tok::LParen {
            return Err(SyntaxError::new(
                open.pos,
                format!(
                    "expected \"(\" after {operator}, found {}",
                    describe(&open.tok)
                ),
            ));
        }
        let mut literals = Vec::new();
        loop {
            let value = self.advance();
            let raw = match value.tok {
                Tok::Quoted(text) => RawLiteral {
                    text,
                    quoted: true,
                    pos: value.pos,
                },
                Tok::Word(text) if !is_keyword(&text) => RawLiteral {
                    text,
                    quoted: false,
                    pos: value.pos,
                },
                other => {
                    return Err(SyntaxError::new(
                        value.pos,
                        format!(
                            "expected a value in the {operator} list, found {}",
                            describe(&other)
                        ),
                    ));
                }
            };
            literals.push(typed(&raw, &kind, &path)?);
            let separator = self.advance();
            match separator.tok {
                Tok::Comma => continue,
                Tok::RParen => break,
                other => {
                    return Err(SyntaxError::new(
                        separator.pos,
                        format!(
                            "expected \",\" or \")\" in the {operator} list, found {}",
                            describe(&other)
                        ),
                    ));
                }
            }
        }
        Ok(Expr::In {
            path,
            literals,
            negated,
        })
    }
}

/// `path op value`; errors about the operator point at the operator.
fn comparison(
    path: FieldPath,
    op: CompareOp,
    op_pos: usize,
    raw: RawLiteral,
) -> Result<Expr, SyntaxError> {
    let kind = single_kind(&path, op.symbol(), op_pos)?;
    if op.is_ordering() && matches!(kind, Kind::Bool | Kind::Enum(_)) {
        return Err(SyntaxError::new(
            op_pos,
            format!(
                "{path} is {}; it supports =, != and IN, not {}",
                kind_name(&kind),
                op.symbol()
            ),
        ));
    }
    let literal = typed(&raw, &kind, &path)?;
    Ok(Expr::Compare { path, op, literal })
}

/// The kind of a path that must name one value, as comparisons and IN need.
fn single_kind(path: &FieldPath, operator: &str, pos: usize) -> Result<Kind, SyntaxError> {
    match path.shape() {
        Shape::Single(kind) => Ok(kind.clone()),
        Shape::Repeated(_) => Err(SyntaxError::new(
            pos,
            format!(
                "{path} is repeated, so {operator} does not apply; \
                 use {path}:VALUE to test whether it contains a value"
            ),
        )),
        Shape::Map { .. } => Err(SyntaxError::new(
            pos,
            format!(
                "{path} is a map, so {operator} does not apply; \
                 use {path}:KEY to test for a key or {path}.KEY {operator} VALUE"
            ),
        )),
    }
}

const TIMESTAMP: &str = "google.protobuf.Timestamp";
const DURATION: &str = "google.protobuf.Duration";

/// Converts a literal to the type of the field it is compared with.
fn typed(raw: &RawLiteral, kind: &Kind, path: &FieldPath) -> Result<Literal, SyntaxError> {
    let text = raw.text.as_str();
    let mismatch = |expected: &str| {
        SyntaxError::new(
            raw.pos,
            format!("{path} is {}; {raw} is not {expected}", kind_name(kind)),
        )
    };
    Ok(match kind {
        Kind::String => Literal::Str(raw.text.clone()),
        Kind::Bool => match text {
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            _ => return Err(mismatch("true or false")),
        },
        Kind::Int32
        | Kind::Int64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Sfixed32
        | Kind::Sfixed64 => Literal::Int(text.parse().map_err(|_| mismatch("an integer"))?),
        Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => Literal::UInt(
            text.parse()
                .map_err(|_| mismatch("a non-negative integer"))?,
        ),
        Kind::Double | Kind::Float => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => Literal::Float(number),
            _ => return Err(mismatch("a finite number")),
        },
        Kind::Enum(enumeration) => {
            if let Some(value) = enumeration.get_value_by_name(text) {
                Literal::Enum {
                    number: value.number(),
                    name: Some(value.name().to_owned()),
                }
            } else if let Ok(number) = text.parse::<i32>() {
                let name = enumeration.get_value(number).map(|v| v.name().to_owned());
                Literal::Enum { number, name }
            } else {
                let names: Vec<String> =
                    enumeration.values().map(|v| v.name().to_owned()).collect();
                return Err(mismatch(&format!(
                    "one of its values ({})",
                    names.join(", ")
                )));
            }
        }
        Kind::Message(message) if message.full_name() == TIMESTAMP => {
            match text.parse::<prost_types::Timestamp>() {
                Ok(time) => Literal::Seconds {
                    seconds: time.seconds,
                    nanos: time.nanos,
                    text: time.to_string(),
                },
                Err(_) => {
                    return Err(mismatch(
                        "an RFC 3339 time such as \"2024-05-01T12:00:00Z\"",
                    ));
                }
            }
        }
        Kind::Message(message) if message.full_name() == DURATION => {
            match text.parse::<prost_types::Duration>() {
                Ok(duration) => Literal::Seconds {
                    seconds: duration.seconds,
                    nanos: duration.nanos,
                    text: duration.to_string(),
                },
                Err(_) => return Err(mismatch("a duration such as \"1.5s\"")),
            }
        }
        Kind::Bytes => {
            return Err(SyntaxError::new(
                raw.pos,
                format!("{path} is bytes, which filters cannot compare"),
            ));
        }
        Kind::Message(_) => {
            return Err(SyntaxError::new(
                raw.pos,
                format!(
                    "{path} is a message ({}); \
                     compare one of its fields, or test presence with {path}:*",
                    kind_name(kind)
                ),
            ));
        }
    })
}

// ---------------------------------------------------------------- display

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, e: &Expr| {
            if e.is_compound() {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::All => Ok(()),
            Expr::And(terms) | Expr::Or(terms) => {
                let joiner = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, term) in terms.iter().enumerate() {
                    if i > 0 {
                        f.write_str(joiner)?;
                    }
                    operand(f, term)?;
                }
                Ok(())
            }
            Expr::Not(inner) => {
                f.write_str("NOT ")?;
                operand(f, inner)
            }
            Expr::Compare { path, op, literal } => write!(f, "{path} {} {literal}", op.symbol()),
            Expr::In {
                path,
                literals,
                negated,
            } => {
                let list: Vec<String> = literals.iter().map(ToString::to_string).collect();
                let operator = if *negated { "NOT IN" } else { "IN" };
                write!(f, "{path} {operator} ({})", list.join(", "))
            }
            Expr::Has { path, target } => match target {
                HasTarget::Present => write!(f, "{path}:*"),
                HasTarget::Element(literal) | HasTarget::Equals(literal) => {
                    write!(f, "{path}:{literal}")
                }
                HasTarget::Key(MapKey::String(key)) => write!(f, "{path}:{}", quote(key)),
                HasTarget::Key(key) => write!(f, "{path}:{}", display_map_key(key)),
            },
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::UInt(n) => write!(f, "{n}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => f.write_str(&quote(s)),
            Literal::Enum {
                name: Some(name), ..
            } => f.write_str(name),
            Literal::Enum { number, name: None } => write!(f, "{number}"),
            Literal::Seconds { text, .. } => f.write_str(&quote(text)),
        }
    }
}

/// Double-quotes with the escapes the lexer understands.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use fleetlog_proto::api::v1::ChangeType;
    use fleetlog_proto::devices::v1::DeviceChange;
    use proptest::prelude::*;
    use prost_reflect::ReflectMessage;

    use super::*;
    use crate::query_lang::testing::{Sample, device_descriptor};

    /// Parses against Device; shows the canonical form or the error.
    fn check(text: &str, expected: Expect) {
        let actual = match Filter::parse(text, &device_descriptor()) {
            Ok(filter) => format!("{filter}"),
            Err(err) => err.to_string(),
        };
        expected.assert_eq(&actual);
    }

    fn filter(text: &str) -> Filter {
        match Filter::parse(text, &device_descriptor()) {
            Ok(filter) => filter,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    /// The names of the samples `text` selects, in order.
    fn selects(text: &str, samples: &[Sample]) -> Vec<&'static str> {
        let filter = filter(text);
        samples
            .iter()
            .filter(|s| filter.matches(&s.dynamic()))
            .map(|s| s.name)
            .collect()
    }

    fn fleet() -> Vec<Sample> {
        vec![
            Sample {
                name: "a",
                priority: Some(3),
                online: Some(true),
                labels: &[("env", "prod"), ("site", "berlin")],
                units: &["sshd", "nginx"],
                heartbeat: Some("2024-05-01T12:00:00Z"),
                os_version: Some("1.2.3"),
            },
            Sample {
                name: "b",
                priority: Some(5),
                online: Some(false),
                labels: &[("env", "dev")],
                units: &["nginx"],
                heartbeat: Some("2024-05-02T08:30:00.5+02:00"),
                os_version: None,
            },
            Sample {
                name: "c",
                priority: Some(7),
                labels: &[("site", "paris")],
                ..Sample::default()
            },
            // No spec, no status, no labels.
            Sample {
                name: "d",
                ..Sample::default()
            },
        ]
    }

    #[test]
    fn parses_to_canonical_form() {
        check("", expect![[""]]);
        check("   \t ", expect![[""]]);
        check(
            r#"labels.site = "berlin" AND spec.logging_config.priority >= 5"#,
            expect![[r#"metadata.labels.site = "berlin" AND spec.logging_config.priority >= 5"#]],
        );
        check(
            "name = 1 OR description = 2",
            expect![[r#"name = "1" OR description = "2""#]],
        );
        check(
            "name = a OR name = b AND name = c",
            expect![[r#"name = "a" OR (name = "b" AND name = "c")"#]],
        );
        check(
            "NOT name = a AND name = b",
            expect![[r#"NOT name = "a" AND name = "b""#]],
        );
        check(
            "-name = a name = b",
            expect![[r#"NOT name = "a" AND name = "b""#]],
        );
        check(
            "(name = a OR name = b) name = c",
            expect![[r#"(name = "a" OR name = "b") AND name = "c""#]],
        );
        check(
            "NOT (name = a OR name = b)",
            expect![[r#"NOT (name = "a" OR name = "b")"#]],
        );
        check(
            "name IN (a, 'b', \"c\\\"d\")",
            expect![[r#"name IN ("a", "b", "c\"d")"#]],
        );
        check(
            "spec.logging_config.priority NOT IN (1,2)",
            expect![[r#"spec.logging_config.priority NOT IN (1, 2)"#]],
        );
        check(
            "labels:env labels.env:* spec:*",
            expect![[r#"metadata.labels:"env" AND metadata.labels.env:* AND spec:*"#]],
        );
        check(
            "spec.logging_config.units:sshd",
            expect![[r#"spec.logging_config.units:"sshd""#]],
        );
        check("status.online = true", expect![[r#"status.online = true"#]]);
        check(
            "spec.logging_config.priority > -1",
            expect![[r#"spec.logging_config.priority > -1"#]],
        );
        check(
            "status.last_heartbeat_time > \"2024-05-02T08:30:00+02:00\"",
            expect![[r#"status.last_heartbeat_time > "2024-05-02T06:30:00Z""#]],
        );
        check(
            "metadata.shards.byNameMod16 = 7",
            expect![[r#"metadata.shards.byNameMod16 = 7"#]],
        );
        check(
            "labels.`app.io/name` = x",
            expect![[r#"metadata.labels.`app.io/name` = "x""#]],
        );
    }

    #[test]
    fn reports_errors_with_position() {
        check(
            "spec.foo = 1",
            expect![[
                r#"invalid filter: column 1: unknown field path "spec.foo" (known fields of fleetlog.devices.v1.Device.Spec: service_account, logging_config)"#
            ]],
        );
        check(
            r#"spec.logging_config.priority >= "abc""#,
            expect![[
                r#"invalid filter: column 33: spec.logging_config.priority is int32; "abc" is not an integer"#
            ]],
        );
        check(
            "name = ",
            expect![[
                r#"invalid filter: column 8: expected a value after "=", found the end of the filter"#
            ]],
        );
        check(
            "name",
            expect![[
                r#"invalid filter: column 5: expected an operator (= != < <= > >= : IN NOT IN) after name, found the end of the filter"#
            ]],
        );
        check(
            "(name = a",
            expect![[
                r#"invalid filter: column 10: expected ")" to close the "(" at column 1, found the end of the filter"#
            ]],
        );
        check(
            "name = a)",
            expect![[r#"invalid filter: column 9: unmatched ")""#]],
        );
        check(
            "name = \"abc",
            expect![[r#"invalid filter: column 8: unterminated string"#]],
        );
        check(
            "name ! a",
            expect![[r#"invalid filter: column 6: unexpected '!'; use != or NOT"#]],
        );
        check(
            "AND name = a",
            expect![[r#"invalid filter: column 1: expected a field path, found "AND""#]],
        );
        check(
            "name = a AND",
            expect![[
                r#"invalid filter: column 13: expected a field path, found the end of the filter"#
            ]],
        );
        check(
            "name = a OR OR",
            expect![[r#"invalid filter: column 13: expected a field path, found "OR""#]],
        );
        check(
            "status.online = maybe",
            expect![[
                r#"invalid filter: column 17: status.online is bool; maybe is not true or false"#
            ]],
        );
        check(
            "status.online < true",
            expect![
                "invalid filter: column 15: status.online is bool; it supports =, != and IN, not <"
            ],
        );
        check(
            "spec = x",
            expect![[
                r#"invalid filter: column 8: spec is a message (fleetlog.devices.v1.Device.Spec); compare one of its fields, or test presence with spec:*"#
            ]],
        );
        check(
            "spec.logging_config.units = sshd",
            expect![[
                r#"invalid filter: column 27: spec.logging_config.units is repeated, so = does not apply; use spec.logging_config.units:VALUE to test whether it contains a value"#
            ]],
        );
        check(
            "labels = x",
            expect![[
                r#"invalid filter: column 8: metadata.labels is a map, so = does not apply; use metadata.labels:KEY to test for a key or metadata.labels.KEY = VALUE"#
            ]],
        );
        check(
            "status.last_heartbeat_time > yesterday",
            expect![[
                r#"invalid filter: column 30: status.last_heartbeat_time is google.protobuf.Timestamp; yesterday is not an RFC 3339 time such as "2024-05-01T12:00:00Z""#
            ]],
        );
        check(
            "name IN a",
            expect![[r#"invalid filter: column 9: expected "(" after IN, found "a""#]],
        );
        check(
            "name IN (a,)",
            expect![[r#"invalid filter: column 12: expected a value in the IN list, found ")""#]],
        );
        check(
            "name IN (a b)",
            expect![[
                r#"invalid filter: column 12: expected "," or ")" in the IN list, found "b""#
            ]],
        );
        check(
            "status.online:maybe",
            expect!["invalid filter: column 15: status.online is bool; maybe is not true or false"],
        );
        check(
            "name = \"é\" AND (name = a",
            expect![[
                r#"invalid filter: column 25: expected ")" to close the "(" at column 16, found the end of the filter"#
            ]],
        );
        check(
            "name = a, b",
            expect![[r#"invalid filter: column 9: expected a field path, found ",""#]],
        );
        check(
            "()",
            expect![[r#"invalid filter: column 2: expected a field path, found ")""#]],
        );
        check(
            "name = a and name = b",
            expect![[
                r#"invalid filter: column 10: unknown field path "and" (known fields of fleetlog.devices.v1.Device: name, display_name, description, metadata, spec, status)"#
            ]],
        );
        check(
            "spec.logging_config.priority = 2.5",
            expect![[
                r#"invalid filter: column 32: spec.logging_config.priority is int32; 2.5 is not an integer"#
            ]],
        );
        // Columns count characters, not bytes.
        check(
            "name = \"é\" )",
            expect![[r#"invalid filter: column 12: unmatched ")""#]],
        );
        let deep = format!("{}name = a{}", "(".repeat(100), ")".repeat(100));
        let err = Filter::parse(&deep, &device_descriptor()).expect_err("too deep");
        assert_eq!(err.field, "filter");
        assert!(err.message.contains("nested deeper than 64"), "{err}");
        let negations = format!("{}name = a", "NOT ".repeat(10_000));
        assert!(Filter::parse(&negations, &device_descriptor()).is_err());
    }

    #[test]
    fn every_error_names_the_filter_field() {
        for bad in [
            "=",
            "name =",
            "x = 1",
            "(",
            "name IN ()",
            "labels:",
            "\"",
            "`",
            "spec.logging_config.priority > x",
        ] {
            let err = Filter::parse(bad, &device_descriptor()).expect_err(bad);
            assert_eq!(err.field, "filter", "{bad}");
            assert!(err.message.starts_with("column "), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert_eq!(selects("", &fleet()), ["a", "b", "c", "d"]);
        assert_eq!(selects("  ", &fleet()), ["a", "b", "c", "d"]);
        assert!(filter("").is_match_all());
        assert!(!filter("name = a").is_match_all());
    }

    #[test]
    fn comparison_operators() {
        let fleet = fleet();
        let p = "spec.logging_config.priority";
        assert_eq!(selects(&format!("{p} = 5"), &fleet), ["b"]);
        assert_eq!(selects(&format!("{p} != 5"), &fleet), ["a", "c", "d"]);
        assert_eq!(selects(&format!("{p} < 5"), &fleet), ["a"]);
        assert_eq!(selects(&format!("{p} <= 5"), &fleet), ["a", "b"]);
        assert_eq!(selects(&format!("{p} > 5"), &fleet), ["c"]);
        assert_eq!(selects(&format!("{p} >= 5"), &fleet), ["b", "c"]);
        // Quoted numbers are typed like bare ones.
        assert_eq!(selects(&format!("{p} = \"7\""), &fleet), ["c"]);
        assert_eq!(selects("name > b", &fleet), ["c", "d"]);
        assert_eq!(selects("name = 'a'", &fleet), ["a"]);
        assert_eq!(selects("status.online = true", &fleet), ["a"]);
        assert_eq!(selects("status.online = false", &fleet), ["b"]);
        assert_eq!(selects("status.online != true", &fleet), ["b", "c", "d"]);
        assert_eq!(
            selects("status.device_info.os_version = 1.2.3", &fleet),
            ["a"]
        );
    }

    #[test]
    fn missing_values_only_satisfy_not_equal() {
        let fleet = fleet();
        // d has no spec: every comparison but != is false.
        assert_eq!(
            selects("spec.logging_config.priority >= 0", &fleet),
            ["a", "b", "c"]
        );
        assert_eq!(
            selects("spec.logging_config.priority != 0", &fleet),
            ["a", "b", "c", "d"]
        );
        assert_eq!(selects("labels.env = prod", &fleet), ["a"]);
        assert_eq!(selects("labels.env != prod", &fleet), ["b", "c", "d"]);
        assert_eq!(selects("labels.env < zzz", &fleet), ["a", "b"]);
        assert_eq!(selects("labels.env IN (prod, dev)", &fleet), ["a", "b"]);
        assert_eq!(selects("labels.env NOT IN (prod)", &fleet), ["b", "c", "d"]);
        assert_eq!(selects("NOT labels.env = prod", &fleet), ["b", "c", "d"]);
    }

    #[test]
    fn boolean_operators_and_precedence() {
        let fleet = fleet();
        assert_eq!(selects("name = a OR name = c", &fleet), ["a", "c"]);
        assert_eq!(
            selects("labels:site AND spec.logging_config.priority > 4", &fleet),
            ["c"]
        );
        assert_eq!(
            selects("labels:site spec.logging_config.priority > 4", &fleet),
            ["c"]
        );
        assert_eq!(selects("NOT labels:site", &fleet), ["b", "d"]);
        assert_eq!(selects("-labels:site", &fleet), ["b", "d"]);
        // AND binds tighter than OR: a OR (b AND x) selects a alone.
        assert_eq!(
            selects("name = a OR name = b AND labels.env = prod", &fleet),
            ["a"]
        );
        assert_eq!(
            selects("(name = a OR name = b) AND labels.env = prod", &fleet),
            ["a"]
        );
        assert_eq!(
            selects("(name = a OR name = b) AND labels.env = dev", &fleet),
            ["b"]
        );
        // NOT binds tighter than AND.
        assert_eq!(selects("NOT name = a AND labels:env", &fleet), ["b"]);
        assert_eq!(
            selects("NOT (name = a AND labels:env)", &fleet),
            ["b", "c", "d"]
        );
        assert_eq!(selects("NOT NOT name = a", &fleet), ["a"]);
    }

    #[test]
    fn in_lists() {
        let fleet = fleet();
        assert_eq!(selects("name IN (a, c, zz)", &fleet), ["a", "c"]);
        assert_eq!(selects("name NOT IN (a, c)", &fleet), ["b", "d"]);
        assert_eq!(
            selects("spec.logging_config.priority IN (3, 7)", &fleet),
            ["a", "c"]
        );
        assert_eq!(
            selects("spec.logging_config.priority NOT IN (3, 7)", &fleet),
            ["b", "d"]
        );
    }

    #[test]
    fn has_on_repeated_maps_and_presence() {
        let fleet = fleet();
        assert_eq!(
            selects("spec.logging_config.units:nginx", &fleet),
            ["a", "b"]
        );
        assert_eq!(selects("spec.logging_config.units:sshd", &fleet), ["a"]);
        assert_eq!(
            selects("spec.logging_config.units:cron", &fleet),
            Vec::<&str>::new()
        );
        assert_eq!(selects("spec.logging_config.units:*", &fleet), ["a", "b"]);
        assert_eq!(selects("labels:env", &fleet), ["a", "b"]);
        assert_eq!(selects("metadata.labels:site", &fleet), ["a", "c"]);
        assert_eq!(selects("labels:*", &fleet), ["a", "b", "c"]);
        assert_eq!(selects("labels.site:*", &fleet), ["a", "c"]);
        assert_eq!(selects("labels.site:paris", &fleet), ["c"]);
        assert_eq!(selects("status:*", &fleet), ["a", "b"]);
        assert_eq!(selects("status.device_info:*", &fleet), ["a"]);
        // Scalars without presence: set means non-default.
        assert_eq!(selects("status.online:*", &fleet), ["a"]);
        assert_eq!(selects("name:c", &fleet), ["c"]);
    }

    #[test]
    fn has_through_repeated_message_fields() {
        use fleetlog_proto::api::v1::{Metadata, OwnerReference};
        let descriptor = Metadata::default().descriptor();
        let owned = Metadata {
            owner_references: vec![
                OwnerReference {
                    kind: "Fleet".into(),
                    name: "f1".into(),
                },
                OwnerReference {
                    kind: "Site".into(),
                    name: "s1".into(),
                },
            ],
            ..Metadata::default()
        }
        .transcode_to_dynamic();
        let orphan = Metadata::default().transcode_to_dynamic();
        let f = Filter::parse("owner_references.kind:Site", &descriptor).expect("valid");
        assert!(f.matches(&owned));
        assert!(!f.matches(&orphan));
        let f = Filter::parse("owner_references.kind:Region", &descriptor).expect("valid");
        assert!(!f.matches(&owned));
        let f = Filter::parse("owner_references:*", &descriptor).expect("valid");
        assert!(f.matches(&owned));
        assert!(!f.matches(&orphan));
        assert!(Filter::parse("owner_references.kind = Site", &descriptor).is_err());
    }

    #[test]
    fn enums_compare_by_name_or_number() {
        let descriptor = DeviceChange::default().descriptor();
        let added = DeviceChange {
            r#type: ChangeType::Added as i32,
            ..Default::default()
        }
        .transcode_to_dynamic();
        let removed = DeviceChange {
            r#type: ChangeType::Removed as i32,
            ..Default::default()
        }
        .transcode_to_dynamic();
        let matches = |text: &str| {
            let f = Filter::parse(text, &descriptor).expect(text);
            (f.matches(&added), f.matches(&removed))
        };
        assert_eq!(matches("type = ADDED"), (true, false));
        assert_eq!(matches("type = \"REMOVED\""), (false, true));
        assert_eq!(matches("type = 3"), (false, true));
        assert_eq!(matches("type != ADDED"), (false, true));
        assert_eq!(matches("type IN (ADDED, REMOVED)"), (true, true));
        assert_eq!(matches("type NOT IN (ADDED, 4)"), (false, true));
        assert_eq!(matches("device:*"), (false, false));
        // Paths reach into nested resources.
        let with_device = DeviceChange {
            device: Some(
                Sample {
                    name: "x",
                    priority: Some(4),
                    ..Sample::default()
                }
                .typed(),
            ),
            ..Default::default()
        }
        .transcode_to_dynamic();
        let f = Filter::parse(
            "device:* AND device.spec.logging_config.priority = 4",
            &descriptor,
        )
        .expect("valid");
        assert!(f.matches(&with_device));
        assert!(!f.matches(&added));

        let shown = |text: &str| match Filter::parse(text, &descriptor) {
            Ok(f) => f.to_string(),
            Err(e) => e.to_string(),
        };
        expect![[r#"type = REMOVED"#]].assert_eq(&shown("type = 3"));
        expect![[r#"type = 42"#]].assert_eq(&shown("type = 42"));
        expect![[r#"invalid filter: column 8: type is enum fleetlog.api.v1.ChangeType; BOGUS is not one of its values (CHANGE_TYPE_UNSPECIFIED, ADDED, MODIFIED, REMOVED, CURRENT)"#]]
            .assert_eq(&shown("type = BOGUS"));
        expect!["invalid filter: column 6: type is enum fleetlog.api.v1.ChangeType; it supports =, != and IN, not >"]
            .assert_eq(&shown("type > ADDED"));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let fleet = fleet();
        let t = "status.last_heartbeat_time";
        // b's heartbeat is 06:30:00.5Z (written with a +02:00 offset).
        assert_eq!(
            selects(&format!("{t} > \"2024-05-02T06:30:00Z\""), &fleet),
            ["b"]
        );
        assert_eq!(
            selects(&format!("{t} >= \"2024-05-02T06:30:00.5Z\""), &fleet),
            ["b"]
        );
        assert_eq!(
            selects(&format!("{t} > \"2024-05-02T06:30:00.6Z\""), &fleet),
            Vec::<&str>::new()
        );
        assert_eq!(
            selects(&format!("{t} < '2024-05-02T00:00:00Z'"), &fleet),
            ["a"]
        );
        assert_eq!(
            selects(&format!("{t} = \"2024-05-01T14:00:00+02:00\""), &fleet),
            ["a"]
        );
        // Devices without a heartbeat never compare.
        assert_eq!(
            selects(&format!("{t} != \"2024-05-01T12:00:00Z\""), &fleet),
            ["b", "c", "d"]
        );
        assert_eq!(selects(&format!("{t}:*"), &fleet), ["a", "b"]);
    }

    #[test]
    fn canonical_form_round_trips() {
        for text in [
            "name = a OR name = b AND NOT (labels:env OR -status.online = true)",
            "labels.`a\"b` = \"x\\\\y\" spec.logging_config.units:\"tab\\t\"",
            "spec.logging_config.priority NOT IN (1, -2) AND status.last_heartbeat_time < \"2024-01-01T00:00:00Z\"",
        ] {
            let once = filter(text).to_string();
            let twice = filter(&once).to_string();
            assert_eq!(once, twice, "{text}");
        }
    }

    /// Pieces that make syntactically interesting garbage.
    fn token_soup() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "(",
            ")",
            "NOT",
            "AND",
            "OR",
            "IN",
            "-",
            ",",
            ":",
            "*",
            "=",
            "!=",
            "<",
            ">=",
            "!",
            "\"x\"",
            "'y",
            "\"",
            "`",
            "5",
            "-3",
            "2.5",
            "true",
            "name",
            "labels",
            "labels.env",
            "labels.`a.b`",
            "spec",
            "spec.logging_config.priority",
            "spec.logging_config.units",
            "status.online",
            "status.last_heartbeat_time",
            "\"2024-01-01T00:00:00Z\"",
            "metadata.shards",
            "é",
            "\\",
        ]);
        prop::collection::vec(pieces, 0..24).prop_map(|parts| parts.join(" "))
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_any_text(text in "\\PC*") {
            if let Ok(f) = Filter::parse(&text, &device_descriptor()) {
                let _ = f.matches(&fleet()[0].dynamic());
            }
        }

        #[test]
        fn parse_never_panics_on_token_soup(text in token_soup()) {
            match Filter::parse(&text, &device_descriptor()) {
                Ok(f) => {
                    for sample in fleet() {
                        let _ = f.matches(&sample.dynamic());
                    }
                    // Whatever parses prints in a form that parses to itself.
                    let printed = f.to_string();
                    let reparsed = Filter::parse(&printed, &device_descriptor());
                    prop_assert!(reparsed.is_ok(), "{} -> {}", text, printed);
                    prop_assert_eq!(reparsed.map(|r| r.to_string()).unwrap_or_default(), printed);
                }
                Err(err) => prop_assert_eq!(err.field, "filter"),
            }
        }
    }
}
