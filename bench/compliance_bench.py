#!/usr/bin/env python3
"""Compliance detection: recall and precision on generated transcripts in all 31 languages,
ITN on (digits) and off (number words), and end to end on the demo model's example clips.

    python bench/compliance_bench.py [--seed 0] [--per-kind 8] [--e2e] [--out bench/results]

Test sentences are generated here, not taken from any corpus: per language a carrier sentence
written for this bench holds one item (a phone number valid for the language's region, a
payment card passing Luhn, an e-mail address, an IBAN, a national ID where stdnum validates one
for the region, a watch term of the language, a watch term split across two segments) or none
(negatives: sentences with amounts, times, counts and dates that are not personal data). With
ITN off every digit is written as the language's digit word (phone and card numbers are read
digit by digit), e-mail with the language's words for @ and dot.

Scoring: an expected item is found when a hit of its label overlaps its characters; every hit
that overlaps no expected item is a false positive. Writes
``bench/results/compliance_<machine>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn
from stdnum.cn import ric

from bench._common import REPO, RESULTS, loadavg, machine_info
from compliance import Detector, WatchList, numwords
from compliance.pii import _AT_DOT, REGION

# carrier: "{X}" is the item; neg: a sentence with numbers that are no personal data
# (ITN on / off); terms: three watch terms of the language (the last of two words or, for
# scripts without spaces, four characters: the one split across segments).
L = {
 "zh": ("请记下{X}，谢谢。", ("我们下午3点见，一共25元。", "我们下午三点见，一共二十五元。"), ["密码", "机密文件", "内部资料"]),
 "yue": ("唔該記低{X}，多謝。", ("我哋3點見，一共25蚊。", "我哋三點見，一共二十五蚊。"), ["密碼", "機密文件", "內部資料"]),
 "ja": ("{X}をメモしてください。", ("3時に会いましょう、25円です。", "三時に会いましょう、二十五円です。"), ["パスワード", "機密情報", "社外秘資料"]),
 "ko": ("{X} 메모해 주세요.", ("3시에 만나요, 25개 있어요.", "세 시에 만나요, 스물다섯 개 있어요."), ["비밀번호", "기밀 문서", "내부 자료"]),
 "vi": ("Vui lòng ghi lại {X} nhé.", ("Hẹn gặp lúc 3 giờ, giá 25 nghìn.", "Hẹn gặp lúc ba giờ, giá hai mươi lăm nghìn."), ["mật khẩu", "tài liệu mật", "hợp đồng nội bộ"]),
 "id": ("Tolong catat {X} ya.", ("Kita bertemu jam 3, harganya 25 ribu.", "Kita bertemu jam tiga, harganya dua puluh lima ribu."), ["kata sandi", "rahasia", "kontrak internal"]),
 "th": ("กรุณาจด{X}ไว้ด้วย", ("เจอกันบ่ายสามโมง ราคา 25 บาท", "เจอกันบ่ายสามโมง ราคายี่สิบห้าบาท"), ["รหัสผ่าน", "ความลับ", "เอกสารลับ"]),
 "ms": ("Sila catat {X} ya.", ("Kita jumpa pukul 3, harganya 25 ringgit.", "Kita jumpa pukul tiga, harganya dua puluh lima ringgit."), ["kata laluan", "sulit", "kontrak dalaman"]),
 "fil": ("Pakitala ang {X} po.", ("Magkita tayo sa alas 3, 25 piso lang.", "Magkita tayo sa alas tres, dalawampu't limang piso lang."), ["password", "lihim", "kontrata ng kumpanya"]),
 "ar": ("من فضلك سجل {X} شكرا.", ("نلتقي الساعة 3 والسعر 25 ريال.", "نلتقي الساعة الثالثة والسعر خمسة وعشرون ريال."), ["كلمة المرور", "سري", "عقد داخلي"]),
 "hi": ("कृपया {X} लिख लीजिए।", ("हम 3 बजे मिलेंगे, कीमत 25 रुपये है।", "हम तीन बजे मिलेंगे, कीमत पच्चीस रुपये है।"), ["पासवर्ड", "गोपनीय", "आंतरिक अनुबंध"]),
 "bg": ("Моля, запишете {X}, благодаря.", ("Ще се видим в 3 часа, струва 25 лева.", "Ще се видим в три часа, струва двадесет и пет лева."), ["парола", "поверително", "вътрешен договор"]),
 "hr": ("Molim zapišite {X}, hvala.", ("Vidimo se u 3 sata, košta 25 eura.", "Vidimo se u tri sata, košta dvadeset pet eura."), ["lozinka", "povjerljivo", "interni ugovor"]),
 "cs": ("Prosím zapište si {X}, děkuji.", ("Uvidíme se ve 3 hodiny, stojí to 25 korun.", "Uvidíme se ve tři hodiny, stojí to dvacet pět korun."), ["heslo", "důvěrné", "interní smlouva"]),
 "da": ("Skriv venligst {X} ned, tak.", ("Vi ses klokken 3, det koster 25 kroner.", "Vi ses klokken tre, det koster femogtyve kroner."), ["adgangskode", "fortroligt", "intern kontrakt"]),
 "nl": ("Noteer alstublieft {X}, dank u.", ("We zien elkaar om 3 uur, het kost 25 euro.", "We zien elkaar om drie uur, het kost vijfentwintig euro."), ["wachtwoord", "vertrouwelijk", "intern contract"]),
 "et": ("Palun kirjutage üles {X}, aitäh.", ("Näeme kell 3, see maksab 25 eurot.", "Näeme kell kolm, see maksab kakskümmend viis eurot."), ["parool", "konfidentsiaalne", "sisemine leping"]),
 "fi": ("Kirjoita ylös {X}, kiitos.", ("Nähdään kello 3, se maksaa 25 euroa.", "Nähdään kello kolme, se maksaa kaksikymmentäviisi euroa."), ["salasana", "luottamuksellinen", "sisäinen sopimus"]),
 "el": ("Παρακαλώ σημειώστε {X}, ευχαριστώ.", ("Τα λέμε στις 3, κοστίζει 25 ευρώ.", "Τα λέμε στις τρεις, κοστίζει είκοσι πέντε ευρώ."), ["κωδικός", "εμπιστευτικό", "εσωτερική σύμβαση"]),
 "hu": ("Kérem, írja fel: {X}, köszönöm.", ("3 órakor találkozunk, 25 euróba kerül.", "három órakor találkozunk, huszonöt euróba kerül."), ["jelszó", "bizalmas", "belső szerződés"]),
 "ga": ("Scríobh síos {X}, le do thoil.", ("Feicfidh mé thú ag 3 a chlog, costaíonn sé 25 euro.", "Feicfidh mé thú ag a trí a chlog, costaíonn sé cúig euro is fiche."), ["pasfhocal", "rúnda", "conradh inmheánach"]),
 "lv": ("Lūdzu, pierakstiet {X}, paldies.", ("Tiekamies pulksten 3, tas maksā 25 eiro.", "Tiekamies pulksten trijos, tas maksā divdesmit piecus eiro."), ["parole", "konfidenciāli", "iekšējais līgums"]),
 "lt": ("Prašau užsirašyti {X}, ačiū.", ("Susitinkame 3 valandą, kainuoja 25 eurus.", "Susitinkame trečią valandą, kainuoja dvidešimt penkis eurus."), ["slaptažodis", "konfidencialu", "vidinė sutartis"]),
 "mt": ("Jekk jogħġbok ikteb {X}, grazzi.", ("Niltaqgħu fit-3, jiswa 25 ewro.", "Niltaqgħu fit-tlieta, jiswa ħamsa u għoxrin ewro."), ["password", "kunfidenzjali", "kuntratt intern"]),
 "pl": ("Proszę zapisać {X}, dziękuję.", ("Widzimy się o 3, to kosztuje 25 złotych.", "Widzimy się o trzeciej, to kosztuje dwadzieścia pięć złotych."), ["hasło", "poufne", "umowa wewnętrzna"]),
 "pt": ("Por favor anote {X}, obrigado.", ("Encontramo-nos às 3, custa 25 euros.", "Encontramo-nos às três, custa vinte e cinco euros."), ["palavra-passe", "confidencial", "contrato interno"]),
 "ro": ("Vă rog notați {X}, mulțumesc.", ("Ne vedem la ora 3, costă 25 de lei.", "Ne vedem la ora trei, costă douăzeci și cinci de lei."), ["parola", "confidențial", "contract intern"]),
 "sk": ("Prosím zapíšte si {X}, ďakujem.", ("Uvidíme sa o 3, stojí to 25 eur.", "Uvidíme sa o tretej, stojí to dvadsaťpäť eur."), ["heslo", "dôverné", "interná zmluva"]),
 "sl": ("Prosim, zapišite {X}, hvala.", ("Vidimo se ob 3, stane 25 evrov.", "Vidimo se ob treh, stane petindvajset evrov."), ["geslo", "zaupno", "notranja pogodba"]),
 "sv": ("Skriv gärna ner {X}, tack.", ("Vi ses klockan 3, det kostar 25 kronor.", "Vi ses klockan tre, det kostar tjugofem kronor."), ["lösenord", "konfidentiellt", "internt avtal"]),
 "en": ("Please write down {X}, thank you.", ("See you at 3, it costs $25.", "See you at three, it costs twenty five dollars."), ["password", "confidential", "internal contract"]),
}

IBAN_COUNTRY = {"bg": "BG", "hr": "HR", "cs": "CZ", "da": "DK", "nl": "NL", "et": "EE", "fi": "FI",
                "el": "GR", "hu": "HU", "ga": "IE", "lv": "LV", "lt": "LT", "mt": "MT", "pl": "PL",
                "pt": "PT", "ro": "RO", "sk": "SK", "sl": "SI", "sv": "SE"}


def digit_words(lang: str) -> list[str]:
    if lang in numwords.CJK:
        return list("零一二三四五六七八九")
    if lang == "ko":
        return list("공일이삼사오육칠팔구")
    inv: dict[int, str] = {}
    for phrase, v in numwords.lexicon(lang).items():
        if v < 10 and v not in inv:
            inv[v] = phrase
    return [inv[i] for i in range(10)]


def spoken(digits: str, lang: str, groups: list[int] | None = None) -> str:
    words = digit_words(lang)
    join = "" if lang in numwords.NO_SPACES else " "
    parts, pos = [], 0
    for g in (groups or [len(digits)]):
        parts.append(join.join(words[int(c)] if c.isdigit() else c for c in digits[pos:pos + g]))
        pos += g
    return (join if join else "").join(parts) if lang in numwords.NO_SPACES else ", ".join(parts)


def spoken_pairs(digits: str, lang: str) -> str:
    """Digits read two at a time where the language has number words for 10..99 (``forty one
    fifty five``); a pair starting with 0 and an odd last digit digit by digit."""
    lex = {v: k for k, v in reversed(list(numwords.lexicon(lang).items()))} \
        if lang not in numwords.CJK and lang != "ko" else {}
    if not all(n in lex for n in range(10, 100)):
        return spoken(digits, lang)
    words = digit_words(lang)
    parts = []
    for i in range(0, len(digits) - 1, 2):
        pair = digits[i:i + 2]
        parts.append(lex[int(pair)] if pair[0] != "0" else f"{words[0]} {words[int(pair[1])]}")
    if len(digits) % 2:
        parts.append(words[int(digits[-1])])
    return " ".join(parts)


def phone(rng, lang):
    region = REGION[lang]
    ex = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE) or \
        phonenumbers.example_number(region)
    nat = str(ex.national_number)
    for _ in range(200):
        cand = nat[:-4] + "".join(str(rng.randint(0, 9)) for _ in range(4))
        num = phonenumbers.parse(cand, region)
        if phonenumbers.is_valid_number(num):
            style = rng.random()
            fmt = (phonenumbers.PhoneNumberFormat.INTERNATIONAL if style < 0.3 else
                   phonenumbers.PhoneNumberFormat.NATIONAL)
            on = phonenumbers.format_number(num, fmt)
            nat = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
            digits = "".join(c for c in nat if c.isdigit())
            groups = [len(g) for g in "".join(c if c.isdigit() else " " for c in nat).split()]
            off = spoken_pairs(digits, lang) if style > 0.6 else spoken(digits, lang, groups)
            return on, off
    raise RuntimeError(region)


def card(rng, lang):
    body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    d = body + luhn.calc_check_digit(body)
    on = " ".join(d[i:i + 4] for i in range(0, 16, 4))
    return on, spoken(d, lang, [4, 4, 4, 4])


def email(rng, lang):
    name = rng.choice(["anna", "jan", "mei", "omar", "sara", "li"])
    last = rng.choice(["berg", "novak", "tan", "silva", "kim"])
    dom = rng.choice(["example", "mail", "firma"])
    tld = rng.choice(["com", "net", "org"])
    at, dot = (a.split("|")[0] for a in _AT_DOT[lang])
    if lang in ("zh", "ja", "ko", "th", "yue"):
        off = f"{name} {dot} {last} {at} {dom} {dot} {tld}"
    else:
        off = f"{name} {dot} {last} {at} {dom} {dot} {tld}"
    return f"{name}.{last}@{dom}.{tld}", off


def iban(rng, lang):
    cc = IBAN_COUNTRY.get(lang, "DE")
    # build from a random BBAN of the country's length, digits only where the country allows
    lengths = {"DE": 18, "BG": 18, "HR": 17, "CZ": 20, "DK": 14, "NL": 14, "EE": 16, "FI": 14,
               "GR": 23, "HU": 24, "IE": 18, "LV": 17, "LT": 16, "MT": 27, "PL": 24, "PT": 21,
               "RO": 20, "SK": 20, "SI": 15, "SE": 20}
    # the countries whose BBAN starts with letters: a bank code of theirs, then digits
    bank = {"NL": "ABNA", "BG": "BNBG", "IE": "AIBK", "LV": "BANK", "MT": "MALT", "RO": "AAAA"}
    prefix = bank.get(cc, "")
    for _ in range(500):
        bban = prefix + "".join(str(rng.randint(0, 9)) for _ in range(lengths[cc] - len(prefix)))
        check = _iban.calc_check_digits(cc + "00" + bban)
        num = cc + check + bban
        if _iban.is_valid(num):
            on = _iban.format(num)
            letters = "".join(c for c in num[4:] if c.isalpha())
            digits = "".join(c for c in num[4:] if c.isdigit())
            pre = num[4:4 + len(letters)] if letters and num[4:4 + len(letters)].isalpha() else ""
            if letters and not pre:
                continue
            off = f"{cc} {spoken(check, lang)} {pre + ' ' if pre else ''}{spoken(digits, lang)}"
            return on, off
    raise RuntimeError(cc)


def national_id(rng, lang):
    if lang in ("zh", "yue"):
        body = "110105" + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" \
            + f"{rng.randint(0, 999):03d}"
        d = body + ric.calc_check_digit(body + "0")   # (stdnum: the number with a check digit)
        return d, spoken(d, lang)
    if lang == "nl":
        from stdnum.nl import bsn
        while True:
            b = "".join(str(rng.randint(0, 9)) for _ in range(8))
            c = bsn.checksum(b + "0")
            d = b + str((-c) % 11) if (-c) % 11 < 10 else None
            if d and bsn.is_valid(d):
                return d, spoken(d, lang)
    if lang == "pl":
        from stdnum.pl import pesel
        b = f"{rng.randint(50, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 9999):04d}"
        d = b + pesel.calc_check_digit(b)
        return d, spoken(d, lang)
    if lang == "en":
        from stdnum.us import ssn
        while True:
            d = f"{rng.randint(100, 665)}{rng.randint(10, 99)}{rng.randint(1000, 9999)}"
            if ssn.is_valid(d):
                return f"{d[:3]}-{d[3:5]}-{d[5:]}", spoken(d, lang, [3, 2, 4])
    return None


KINDS = {"PHONE": phone, "CARD": card, "EMAIL": email, "IBAN": iban, "ID": national_id}


def cases(lang: str, itn: bool, rng, per_kind: int):
    """(segments, expected [(label, start, end) in the joined text])."""
    carrier, neg, terms = L[lang]
    sp = "" if lang in numwords.NO_SPACES else " "
    out = []
    for label, gen in KINDS.items():
        for _ in range(per_kind):
            got = gen(rng, lang)
            if got is None:
                break
            x = got[0] if itn else got[1]
            text = carrier.replace("{X}", x)
            a = text.index(x)
            out.append(([text], [(label, a, a + len(x))]))
    for term in terms:
        text = carrier.replace("{X}", term)
        a = text.index(term)
        out.append(([text], [("WATCH", a, a + len(term))]))
    # the last term split across two segments
    term = terms[-1]
    cut = term.index(" ") if " " in term else len(term) // 2
    text = carrier.replace("{X}", term)
    a = text.index(term)
    s1, s2 = text[:a + cut].rstrip(), text[a + cut:].lstrip()
    joined = s1 + " " + s2
    b = joined.index(s2) + len(term[cut:].lstrip())
    out.append(([s1, s2], [("WATCH", a, b)]))
    # negatives: numbers that are no personal data, and the carrier with a plain word
    for _ in range(per_kind):
        out.append(([neg[0] if itn else neg[1]], []))
    # numbers that look like personal data and are not: order numbers of 5-9 digits, amounts,
    # years, a 16-digit number failing Luhn (a card typed wrong), an 18-digit ID with a wrong
    # check digit
    for _ in range(per_kind):
        kind = rng.randrange(4)
        if kind == 0:
            d = str(rng.randint(10_000, 999_999_999))
        elif kind == 1:
            d = str(rng.randint(1950, 2030)) + str(rng.randint(100, 999))
        elif kind == 2:
            body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
            d = body + str((int(luhn.calc_check_digit(body)) + 1 + rng.randrange(9)) % 10)
        else:
            body = "110105" + f"{rng.randint(1950, 2005)}0101{rng.randint(0, 999):03d}"
            good = ric.calc_check_digit(body + "0")
            d = body + next(c for c in "0123456789X" if c != good)
        x = d if itn else spoken(d, lang)
        out.append(([carrier.replace("{X}", x)], []))
    out.append(([carrier.replace("{X}", "2" if itn else digit_words(lang)[2])], []))
    del sp
    return out


def score(detector, lang, itn, items):
    tp = fn = fp = 0
    misses, false = [], []
    for segs, expected in items:
        row = {"language": lang, "text": " ".join(segs),
               "segments": [{"start": float(i), "end": float(i + 1), "text": s}
                            for i, s in enumerate(segs)]}
        hits = detector.scan(row)
        used = set()
        for label, a, b in expected:
            m = [i for i, h in enumerate(hits) if h["char_start"] < b and a < h["char_end"]
                 and (h["label"] == label or (label == "WATCH" and h["kind"] == "watch"))]
            if m:
                tp += 1
                used.update(m)
            else:
                fn += 1
                misses.append((label, row["text"]))
        for i, h in enumerate(hits):
            if i not in used:
                fp += 1
                false.append((h["label"], h["text"], row["text"]))
    return tp, fn, fp, misses, false


def e2e(detector_for, out_rows):
    """The demo model on example/*.wav, ITN on and off: hits on its transcript vs on the
    reference text (examples.tsv); and detection time against transcription time."""
    import csv
    from model import FunASRNano
    asr = FunASRNano.from_pretrained(str(REPO / "models" / "demo"), device="cpu", dtype="fp32")
    rows = list(csv.DictReader(open(REPO / "example" / "examples.tsv", encoding="utf-8"),
                               delimiter="\t"))
    res = {}
    for itn in (True, False):
        files = [str(REPO / "example" / r["file"]) for r in rows]
        asr.transcribe(files[:1], itn=itn)     # warm
        t0 = time.perf_counter()
        outs = asr.transcribe(files, itn=itn, language=None)
        t_asr = time.perf_counter() - t0
        t_det = 0.0
        agree = right = same_on_right = 0
        detail = []
        for r, o in zip(rows, outs):
            lang = r["language"]
            ref = r["text_itn" if itn else "text_noitn"]
            det = detector_for(lang)
            row = {"language": lang, "text": o["text"], "duration": o["duration"],
                   "segments": [{"start": 0.0, "end": o["duration"], "text": o["text"]}]}
            t1 = time.perf_counter()
            hyp_hits = det.scan(row)
            t_det += time.perf_counter() - t1
            ref_hits = det.scan({"language": lang, "text": ref, "segments": [
                {"start": 0.0, "end": o["duration"], "text": ref}]})
            a = sorted((h["label"], h["term"] or h["category"]) for h in hyp_hits)
            b = sorted((h["label"], h["term"] or h["category"]) for h in ref_hits)
            ok_text = o["text"].strip() == ref.strip()
            right += ok_text
            same_on_right += ok_text and a == b
            agree += a == b
            detail.append({"file": r["file"], "itn": itn, "text_right": ok_text,
                           "hyp": o["text"], "hits_hyp": a, "hits_ref": b})
        res["on" if itn else "off"] = {"clips": len(rows), "text_right": right,
                                       "same_hits_where_text_right": same_on_right,
                                       "same_hits_all": agree,
                                       "transcribe_s": round(t_asr, 3),
                                       "detect_s": round(t_det, 5),
                                       "detect_share": round(t_det / t_asr, 5)}
        out_rows.extend(detail)
    return res


def detection(rng, per_kind: int) -> dict:
    """Recall and precision per language and ITN setting over the generated sentences."""
    table, total, all_miss, all_fp = [], [0, 0, 0], [], []
    for lang in L:
        terms = "\n".join(f"{t}\tconfidential\thigh" for t in L[lang][2])
        det = Detector(watch=WatchList.parse(terms, source=f"terms-{lang}"), pii=True)
        for itn in (True, False):
            tp, fn, fp, miss, false = score(det, lang, itn, cases(lang, itn, rng, per_kind))
            total = [total[0] + tp, total[1] + fn, total[2] + fp]
            all_miss += [(lang, itn, *m) for m in miss]
            all_fp += [(lang, itn, *f) for f in false]
            table.append({"language": lang, "itn": itn, "expected": tp + fn, "found": tp,
                          "false_positives": fp,
                          "recall": round(tp / max(1, tp + fn), 4),
                          "precision": round(tp / max(1, tp + fp), 4)})
    return {"table": table, "total": total, "misses": all_miss, "false_positives": all_fp}


def list_speed() -> dict:
    """A 10,000-term list: load + compile, and matching time against the 3-term list."""
    import string
    wr = random.Random(1)
    big = "\n".join(" ".join("".join(wr.choice(string.ascii_lowercase)
                                      for _ in range(wr.randint(4, 9)))
                             for _ in range(wr.randint(1, 3))) + "\tconfidential\thigh"
                    for _ in range(10_000))
    t0 = time.perf_counter()
    wl = WatchList.parse(big)
    Detector(watch=wl).find_text("warm up", "en")
    t_load = time.perf_counter() - t0
    small = Detector(watch=WatchList.parse("\n".join(L["en"][2])), pii=True)
    large = Detector(watch=wl, pii=True)
    sample = "Please write down 4111 1111 1111 1111 and the password, thank you. " * 4
    per = []
    for d in (small, large):
        d.find_text(sample, "en")
        t0 = time.perf_counter()
        for _ in range(200):
            d.find_text(sample, "en")
        per.append((time.perf_counter() - t0) / 200)
    return {"load_10000_terms_s": round(t_load, 3), "match_ms_3_terms": round(per[0] * 1000, 3),
            "match_ms_10000_terms": round(per[1] * 1000, 3)}


def e2e_detector(lang: str) -> Detector:
    terms = E2E_TERMS.get(lang, [])
    return Detector(watch=WatchList.parse("\n".join(terms)) if terms else None, pii=True)


def markdown(doc: dict, command: str) -> list[str]:
    s, sp = doc["summary"], doc["speed"]
    lines = [f"# Compliance detection bench ({doc['machine']})", "", f"`{command}`", "",
             f"Overall: recall {s['recall']:.2%}, precision {s['precision']:.2%} "
             f"({s['found']} of {s['expected']} found, {s['false_positives']} false positives). "
             f"10,000-term list: loaded and compiled in {sp['load_10000_terms_s']:.2f} s; "
             f"matching one ~280-character text: {sp['match_ms_3_terms']:.2f} ms with 3 terms, "
             f"{sp['match_ms_10000_terms']:.2f} ms with 10,000. Load average (1 min) at the "
             f"end: {doc['load_average_1min']}.", "",
             "| language | ITN | items | found | false pos. | recall | precision |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['language']} | {'on' if r['itn'] else 'off'} | {r['expected']} | "
              f"{r['found']} | {r['false_positives']} | {r['recall']:.1%} | "
              f"{r['precision']:.1%} |" for r in doc["table"]]
    if doc["e2e"]:
        lines += ["", "End to end, demo model on example/*.wav (12 clips, 12 languages):", "",
                  "| ITN | text right | same hits where right | same hits, all | "
                  "detect / transcribe time |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {k} | {v['text_right']}/{v['clips']} | "
                  f"{v['same_hits_where_text_right']}/{v['text_right']} | "
                  f"{v['same_hits_all']}/{v['clips']} | {v['detect_share']:.3%} |"
                  for k, v in doc["e2e"].items()]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-kind", type=int, default=8)
    ap.add_argument("--e2e", action="store_true", help="also the demo model on example/*.wav")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    det = detection(random.Random(args.seed), args.per_kind)
    speed = list_speed()
    e2e_rows: list = []
    e2e_res = e2e(e2e_detector, e2e_rows) if args.e2e else None
    tp, fn, fp = det["total"]
    info = machine_info("cpu")
    doc = {"machine": info["host"], "cpu": info.get("cpu"), "seed": args.seed,
           "per_kind": args.per_kind,
           "load_average_1min": round((loadavg() or [float("nan")])[0], 1),
           "summary": {"recall": round(tp / (tp + fn), 4), "precision": round(tp / (tp + fp), 4),
                       "expected": tp + fn, "found": tp, "false_positives": fp, **speed},
           "speed": speed, "table": det["table"], "misses": det["misses"][:200],
           "false_positives": det["false_positives"][:200], "e2e": e2e_res,
           "e2e_rows": e2e_rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compliance.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n",
                                         encoding="utf-8")
    command = (f"python bench/compliance_bench.py --seed {args.seed} --per-kind {args.per_kind}"
               f"{' --e2e' if args.e2e else ''}")
    lines = markdown(doc, command)
    (out / "compliance.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    for m in det["misses"][:30]:
        print("MISS", m, file=sys.stderr)
    for f in det["false_positives"][:30]:
        print("FP", f, file=sys.stderr)
    return 0


# watch terms for the end-to-end run: one word of each example sentence (examples.tsv)
E2E_TERMS = {"zh": ["这本书"], "en": ["ticket"], "yue": ["學生"], "ja": ["会いましょう"],
             "ko": ["만나요"], "id": ["Harganya"], "vi": ["Cuộc họp"], "pt": ["Custa"],
             "nl": ["vergadering"], "pl": ["kosztuje"], "sv": ["böcker"], "fi": ["Bussi"]}

if __name__ == "__main__":
    sys.exit(main())
