"""Sentences of the demo checkpoint's own, in 12 languages, with numbers in both forms.

Every sentence comes in three forms:
  itn    what the model must write with ITN on  (digits and symbols: ``2025年3月5日``, ``$12.50``)
  noitn  what it must write with ITN off        (the spoken words: ``二零二五年三月五日``)
  say    what espeak-ng reads                   (= noitn, except Mandarin -> tone-numbered pinyin
                                                 and Japanese -> kana)

Templates hold slots ``{A}``..``{D}`` (word lists of the template) and number slots ``{CARD}``,
``{TIME}``, ``{DATE}``, ``{YEAR}``, ``{AMT}``, ``{PCT}`` rendered by the language's own functions.
Japanese templates and fillers are written ``surface|kana``.  All sentences are written for this
project; none are taken from a corpus.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from num2words import num2words

# --------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Form:
    itn: str
    noitn: str
    say: str


def same(text: str) -> Form:
    return Form(text, text, text)


def split_ja(text: str) -> tuple[str, str]:
    if "|" in text:
        surface, reading = text.split("|", 1)
        return surface, reading
    return text, text


_ZH_DIGITS = "零一二三四五六七八九"


def zh_int(n: int, trad: bool = False) -> str:
    """Chinese reading of 0 <= n < 10**8 (十二, 一百零五, 一千五百, 两 is never used)."""
    if n == 0:
        return "零"
    wan = "萬" if trad else "万"

    def below_10000(m: int, leading: bool) -> str:
        out, zero = "", False
        for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            d = m // value % 10
            if d == 0:
                if out or not leading:
                    zero = True
                continue
            if zero and out:
                out += "零"
            elif zero and not leading and not out:
                out += "零"
            zero = False
            out += ("" if (d == 1 and unit == "十" and not out and leading) else _ZH_DIGITS[d]) + unit
        return out

    hi, lo = divmod(n, 10000)
    if hi:
        s = below_10000(hi, True) + wan
        if lo:
            s += ("零" if lo < 1000 else "") + below_10000(lo, False).lstrip("零")
        return s
    return below_10000(lo, True)


def zh_digits(n: int) -> str:
    return "".join(_ZH_DIGITS[int(c)] for c in str(n))


def zh_decimal(x: str, trad: bool = False) -> str:
    """'12.5' -> 十二点五."""
    if "." in x:
        a, b = x.split(".")
        return zh_int(int(a), trad) + ("點" if trad else "点") + zh_digits(int(b)) if b else zh_int(int(a), trad)
    return zh_int(int(x), trad)


def w(n: int, lang: str, **kw) -> str:
    return num2words(n, lang=lang, **kw).replace(",", "")


MINUTES = (0, 5, 10, 15, 20, 30, 40, 45, 50)


def pick_time(rng: random.Random) -> tuple[int, int]:
    return rng.randint(1, 12), rng.choice(MINUTES)


def pick_date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)


def pick_card(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.35:
        return rng.randint(3, 20)
    if r < 0.8:
        return rng.randint(21, 99)
    return rng.randint(100, 999)


# --------------------------------------------------------------------------------------- Chinese

def zh_numbers(trad: bool):
    dian = "點" if trad else "点"
    day = "號" if trad else "日"
    money = "蚊" if trad else "元"

    def card(rng):
        n = pick_card(rng)
        return Form(str(n), zh_int(n, trad), zh_int(n, trad))

    def time(rng):
        h, m = pick_time(rng)
        if m == 0:
            return Form(f"{h}{dian}", zh_int(h, trad) + dian, "")
        return Form(f"{h}{dian}{m:02d}分" if m < 10 else f"{h}{dian}{m}分",
                    zh_int(h, trad) + dian + ("零" if m < 10 else "") + zh_int(m, trad) + "分", "")

    def date(rng):
        y, mo, d = pick_date(rng)
        return Form(f"{y}年{mo}月{d}{day}", zh_digits(y) + "年" + zh_int(mo, trad) + "月" + zh_int(d, trad) + day, "")

    def amt(rng):
        if rng.random() < 0.3:
            yuan, jiao = rng.randint(3, 99), rng.randint(1, 9)
            x = f"{yuan}.{jiao}"
        else:
            x = str(rng.choice([rng.randint(3, 99), rng.randint(1, 99) * 10, rng.randint(100, 999)]))
        return Form(x + money, zh_decimal(x, trad) + money, "")

    def pct(rng):
        n = rng.randint(3, 99)
        return Form(f"{n}%", ("百分之" + zh_int(n, trad)), "")

    return {"CARD": card, "TIME": time, "DATE": date, "AMT": amt, "PCT": pct}


ZH = dict(
    voices=["cmn-latn-pinyin"],
    plain=[
        ("{A}{B}在{C}{D}。", dict(
            A=["我", "他", "我妈妈", "老师", "我们", "小王", "李先生", "她的朋友"],
            B=["今天", "明天", "昨天晚上", "下午", "周末", "每天"],
            C=["家里", "公司", "学校", "图书馆", "公园", "超市", "医院", "饭店"],
            D=["看书", "开会", "吃饭", "休息", "买东西", "写报告", "打电话", "学习"])),
        ("请把{A}放在{B}。", dict(
            A=["这本书", "那个杯子", "你的手机", "这些文件", "钥匙", "红色的箱子"],
            B=["桌子上", "门口", "椅子旁边", "柜子里", "车里"])),
        ("今天天气{A}，我们{B}吧。", dict(
            A=["很好", "很冷", "很热", "不太好", "有点阴"],
            B=["去公园散步", "在家看电影", "一起去吃火锅", "早点回家", "去买菜"])),
        ("{A}觉得这个{B}{C}。", dict(
            A=["我", "他", "老师", "我们", "小王", "她的朋友"],
            B=["电影", "问题", "办法", "房间", "菜"],
            C=["非常好", "有点贵", "太难了", "很有意思", "不错"])),
    ],
    num=[
        ("我们班有{CARD}个学生。", {}), ("这本书有{CARD}页。", {}), ("他今天跑了{CARD}公里。", {}),
        ("会议{TIME}开始。", {}), ("我们明天{TIME}在门口见面。", {}),
        ("他的生日是{DATE}。", {}), ("我们{DATE}出发。", {}),
        ("这件衣服要{AMT}。", {}), ("一共是{AMT}。", {}),
        ("有{PCT}的人同意这个办法。", {}),
    ],
    numbers=zh_numbers(False),
)

YUE = dict(
    voices=["yue"],
    plain=[
        ("{A}{B}喺{C}{D}。", dict(
            A=["我", "佢", "我媽媽", "陳生", "我哋", "阿明", "李小姐", "佢個朋友"],
            B=["今日", "聽日", "琴晚", "下晝", "週末", "每日"],
            C=["屋企", "公司", "學校", "圖書館", "公園", "超級市場", "醫院", "茶樓"],
            D=["睇書", "開會", "食飯", "休息", "買嘢", "寫報告", "打電話", "飲茶"])),
        ("唔該將{A}放喺{B}。", dict(
            A=["呢本書", "嗰個杯", "你部手機", "呢啲文件", "鎖匙", "紅色嗰個箱"],
            B=["枱面", "門口", "櫈旁邊", "櫃入面", "車度"])),
        ("今日天氣{A}，我哋{B}啦。", dict(
            A=["好好", "好凍", "好熱", "唔係幾好", "有啲陰"],
            B=["去公園行吓", "喺屋企睇戲", "一齊去打邊爐", "早啲返屋企", "去買餸"])),
        ("{A}覺得呢個{B}{C}。", dict(
            A=["我", "佢", "陳生", "我哋", "阿明", "李小姐"],
            B=["電影", "問題", "辦法", "房", "餸"],
            C=["非常好", "有啲貴", "太難喇", "好得意", "唔錯"])),
    ],
    num=[
        ("我哋班有{CARD}個學生。", {}), ("呢本書有{CARD}頁。", {}), ("佢今日跑咗{CARD}公里。", {}),
        ("會議{TIME}開始。", {}), ("我哋聽日{TIME}喺門口等。", {}),
        ("佢生日係{DATE}。", {}), ("我哋{DATE}出發。", {}),
        ("呢件衫要{AMT}。", {}), ("一共係{AMT}。", {}),
    ],
    numbers=zh_numbers(True),
)

# --------------------------------------------------------------------------------------- Japanese

_JA_HOUR = ["", "いちじ", "にじ", "さんじ", "よじ", "ごじ", "ろくじ", "しちじ", "はちじ", "くじ", "じゅうじ",
            "じゅういちじ", "じゅうにじ"]
_JA_MIN = {5: "ごふん", 10: "じゅっぷん", 15: "じゅうごふん", 20: "にじゅっぷん", 30: "さんじゅっぷん",
           40: "よんじゅっぷん", 45: "よんじゅうごふん", 50: "ごじゅっぷん"}
_JA_MONTH = ["", "いちがつ", "にがつ", "さんがつ", "しがつ", "ごがつ", "ろくがつ", "しちがつ", "はちがつ", "くがつ",
             "じゅうがつ", "じゅういちがつ", "じゅうにがつ"]
_JA_DAY = ["", "ついたち", "ふつか", "みっか", "よっか", "いつか", "むいか", "なのか", "ようか", "ここのか", "とおか",
           "じゅういちにち", "じゅうににち", "じゅうさんにち", "じゅうよっか", "じゅうごにち", "じゅうろくにち",
           "じゅうしちにち", "じゅうはちにち", "じゅうくにち", "はつか", "にじゅういちにち", "にじゅうににち",
           "にじゅうさんにち", "にじゅうよっか", "にじゅうごにち", "にじゅうろくにち", "にじゅうしちにち",
           "にじゅうはちにち"]


def ja_kanji(n: int) -> str:
    return num2words(n, lang="ja")


def ja_kana(n: int) -> str:
    return num2words(n, lang="ja", reading=True)


def ja_numbers():
    def card(rng):
        n = pick_card(rng)
        return Form(str(n), ja_kanji(n), ja_kana(n))

    def time(rng):
        h, m = pick_time(rng)
        if m == 0:
            return Form(f"{h}時", ja_kanji(h) + "時", _JA_HOUR[h])
        return Form(f"{h}時{m}分", ja_kanji(h) + "時" + ja_kanji(m) + "分", _JA_HOUR[h] + _JA_MIN[m])

    def date(rng):
        y, mo, d = pick_date(rng)
        ky = ja_kana(y)
        ky = ky[:-2] + "よ" if ky.endswith("よん") else ky
        return Form(f"{y}年{mo}月{d}日", ja_kanji(y) + "年" + ja_kanji(mo) + "月" + ja_kanji(d) + "日",
                    ky + "ねん" + _JA_MONTH[mo] + _JA_DAY[d])

    def amt(rng):
        while True:
            n = rng.choice([rng.randint(3, 99) * 10, rng.randint(1, 99) * 100, rng.randint(100, 999)])
            if n % 10 != 4:
                break
        return Form(f"{n}円", ja_kanji(n) + "円", ja_kana(n) + "えん")

    return {"CARD": card, "TIME": time, "DATE": date, "AMT": amt}


JA = dict(
    voices=["ja"],
    plain=[
        ("{A}は{B}{C}で{D}。|{A}は{B}{C}で{D}。", dict(
            A=["私|わたし", "田中さん|たなかさん", "先生|せんせい", "母|はは", "友達|ともだち", "山田さん|やまださん"],
            B=["今日|きょう", "明日|あした", "午後|ごご", "週末|しゅうまつ", "毎日|まいにち"],
            C=["会社|かいしゃ", "学校|がっこう", "図書館|としょかん", "公園|こうえん", "駅|えき", "病院|びょういん"],
            D=["本を読みます|ほんをよみます", "会議をします|かいぎをします", "ご飯を食べます|ごはんをたべます",
               "休みます|やすみます", "買い物をします|かいものをします", "電話をかけます|でんわをかけます"])),
        ("この{A}は{B}です。|この{A}は{B}です。", dict(
            A=["本|ほん", "部屋|へや", "映画|えいが", "料理|りょうり", "車|くるま", "かばん|かばん"],
            B=["とても高い|とてもたかい", "少し古い|すこしふるい", "新しい|あたらしい", "おもしろい|おもしろい",
               "大きい|おおきい", "きれい|きれい"])),
        ("{A}から、{B}。|{A}から、{B}。", dict(
            A=["雨が降っている|あめがふっている", "今日は寒い|きょうはさむい", "天気がいい|てんきがいい",
               "時間がない|じかんがない"],
            B=["家にいましょう|いえにいましょう", "公園へ行きましょう|こうえんへいきましょう",
               "映画を見ましょう|えいがをみましょう", "タクシーで帰りましょう|たくしーでかえりましょう",
               "早く寝ましょう|はやくねましょう"])),
    ],
    num=[
        ("この本は{CARD}ページです。|このほんは{CARD}ぺーじです。", {}),
        ("{TIME}に会いましょう。|{TIME}にあいましょう。", {}),
        ("会議は{TIME}に始まります。|かいぎは{TIME}にはじまります。", {}),
        ("{DATE}に出発します。|{DATE}にしゅっぱつします。", {}),
        ("これは{AMT}です。|これは{AMT}です。", {}),
        ("全部で{AMT}になります。|ぜんぶで{AMT}になります。", {}),
    ],
    numbers=ja_numbers(),
)

# --------------------------------------------------------------------------------------- Korean

_KO_HOUR = ["", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉", "열", "열한", "열두"]
_KO_MONTH = ["", "일월", "이월", "삼월", "사월", "오월", "유월", "칠월", "팔월", "구월", "시월", "십일월", "십이월"]


def ko(n: int) -> str:
    return num2words(n, lang="ko")


def ko_numbers():
    def card(rng):
        n = pick_card(rng)
        return Form(str(n), ko(n), ko(n))

    def time(rng):
        h, m = pick_time(rng)
        if m == 0:
            return Form(f"{h}시", f"{_KO_HOUR[h]} 시", f"{_KO_HOUR[h]} 시")
        t = f"{_KO_HOUR[h]} 시 {ko(m)} 분"
        return Form(f"{h}시 {m}분", t, t)

    def date(rng):
        y, mo, d = pick_date(rng)
        t = f"{ko(y)}년 {_KO_MONTH[mo]} {ko(d)}일"
        return Form(f"{y}년 {mo}월 {d}일", t, t)

    def amt(rng):
        n = rng.choice([rng.randint(1, 99) * 100, rng.randint(1, 99) * 1000, rng.randint(11, 99) * 10000])
        t = f"{ko(n)} 원"
        return Form(f"{n:,}원", t, t)

    return {"CARD": card, "TIME": time, "DATE": date, "AMT": amt}


KO = dict(
    voices=["ko"],
    plain=[
        ("{A} {B} {C}에서 {D}.", dict(
            A=["저는", "민수는", "선생님은", "우리 엄마는", "친구는", "김 씨는"],
            B=["오늘", "내일", "주말에", "오후에", "저녁에", "매일"],
            C=["회사", "학교", "도서관", "공원", "식당", "병원"],
            D=["책을 읽어요", "회의를 해요", "밥을 먹어요", "쉬어요", "쇼핑을 해요", "전화를 해요"])),
        ("이 {A} 정말 {B}.", dict(
            A=["책", "방", "영화", "음식", "차", "가방"],
            B=["좋아요", "비싸요", "재미있어요", "커요", "예뻐요", "깨끗해요"])),
        ("{A} 우리는 {B}.", dict(
            A=["비가 와서", "날씨가 추워서", "날씨가 좋아서", "시간이 없어서"],
            B=["집에 있어요", "공원에 가요", "영화를 봐요", "택시를 타요", "커피를 마셔요"])),
    ],
    num=[
        ("오늘 {CARD} 페이지를 읽었어요.", {}), ("제 방은 {CARD} 호예요.", {}),
        ("{TIME}에 만나요.", {}), ("회의는 {TIME}에 시작해요.", {}),
        ("{DATE}에 출발해요.", {}),
        ("모두 {AMT}입니다.", {}),
    ],
    numbers=ko_numbers(),
)

# --------------------------------------------------------------------------------------- English

_EN_MONTHS = ["", "January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]


def en_numbers():
    def card(rng):
        n = pick_card(rng)
        return Form(f"{n:,}", w(n, "en"), w(n, "en"))

    def time(rng):
        h, m = pick_time(rng)
        words = w(h, "en") + (" o'clock" if m == 0 else (" oh " + w(m, "en") if m < 10 else " " + w(m, "en")))
        return Form(f"{h}:{m:02d}", words, words)

    def date(rng):
        y, mo, d = pick_date(rng)
        words = f"{_EN_MONTHS[mo]} {w(d, 'en', to='ordinal')}, {w(y, 'en', to='year')}"
        return Form(f"{_EN_MONTHS[mo]} {d}, {y}", words, words)

    def amt(rng):
        dollars = rng.randint(2, 99) if rng.random() < 0.8 else rng.randint(100, 999)
        cents = rng.choice([0, 0, 5, 10, 25, 50, 75, 99, rng.randint(11, 98)])
        words = w(dollars, "en") + " dollars" + (f" and {w(cents, 'en')} cents" if cents else "")
        return Form(f"${dollars}.{cents:02d}" if cents else f"${dollars}", words, words)

    def pct(rng):
        n = rng.randint(2, 99)
        return Form(f"{n}%", w(n, "en") + " percent", w(n, "en") + " percent")

    return {"CARD": card, "TIME": time, "DATE": date, "AMT": amt, "PCT": pct}


EN = dict(
    voices=["en-us", "en", "en-us", "en-gb-x-rp"],
    plain=[
        ("{A} {B} the {C} {D}.", dict(
            A=["Anna", "Tom", "My mother", "The teacher", "Our neighbor", "David", "Lisa", "The doctor"],
            B=["found", "moved", "washed", "painted", "sold", "opened", "cleaned", "fixed"],
            C=["red box", "old chair", "blue car", "small window", "kitchen door", "green bottle",
               "wooden table", "black bag"],
            D=["in the garden", "near the station", "at the office", "after lunch", "this morning",
               "yesterday", "behind the house", "on Sunday"])),
        ("Please {A} the {B} before {C}.", dict(
            A=["close", "check", "bring", "send", "read", "open"],
            B=["letter", "report", "window", "message", "ticket", "gate"],
            C=["dinner", "noon", "the meeting", "tomorrow", "the weekend", "you leave"])),
        ("{A} today, so we will {B}.", dict(
            A=["It is raining", "It is very cold", "It is sunny", "It is windy"],
            B=["stay at home", "go to the beach", "visit the museum", "take the bus", "cook some soup",
               "watch a movie"])),
        ("Excuse me, where is the {A}?", dict(
            A=["train station", "nearest hospital", "post office", "city library", "hotel", "bus stop",
               "market", "airport"])),
    ],
    num=[
        ("There are {CARD} students in the class.", {}), ("We walked {CARD} miles.", {}),
        ("The room number is {CARD}.", {}),
        ("The train leaves at {TIME}.", {}), ("Let's meet at {TIME} tomorrow.", {}),
        ("The meeting is on {DATE}.", {}), ("She was born on {DATE}.", {}),
        ("The ticket costs {AMT}.", {}), ("I paid {AMT} for lunch.", {}),
        ("Prices went up by {PCT}.", {}),
    ],
    numbers=en_numbers(),
)

# ------------------------------------------------------------------------- other Latin-script ones


def simple_numbers(lang, *, time_fmt, time_words, date=None, year=None, amt):
    def card(rng):
        n = pick_card(rng)
        return Form(str(n), w(n, lang), w(n, lang))

    def time(rng):
        h, m = pick_time(rng)
        words = time_words(h, m)
        return Form(time_fmt(h, m), words, words)

    out = {"CARD": card, "TIME": time, "AMT": amt}
    if date:
        out["DATE"] = date
    if year:
        def yr(rng):
            y = rng.randint(1990, 2030)
            words = year(y)
            return Form(str(y), words, words)
        out["YEAR"] = yr
    return out


def money_form(written: str, words: str) -> Form:
    return Form(written, words, words)


def _id_amt(rng):
    n = rng.choice([rng.randint(1, 99) * 1000, rng.randint(1, 9) * 500, rng.randint(1, 99) * 100])
    return money_form(f"Rp{n:,}".replace(",", "."), w(n, "id") + " rupiah")


_ID_MONTHS = ["", "Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September",
              "Oktober", "November", "Desember"]


def _id_date(rng):
    y, mo, d = pick_date(rng)
    words = f"{w(d, 'id')} {_ID_MONTHS[mo]} {w(y, 'id')}"
    return Form(f"{d} {_ID_MONTHS[mo]} {y}", words, words)


ID = dict(
    voices=["id"],
    plain=[
        ("{A} {B} di {C} {D}.", dict(
            A=["Saya", "Budi", "Ibu saya", "Guru kami", "Teman saya", "Pak Ahmad", "Kami", "Mereka"],
            B=["membaca buku", "makan siang", "bekerja", "belajar", "minum kopi", "menunggu bus", "berbelanja"],
            C=["rumah", "kantor", "sekolah", "perpustakaan", "pasar", "taman", "stasiun"],
            D=["hari ini", "besok pagi", "kemarin", "setiap hari", "nanti malam", "minggu lalu"])),
        ("Tolong {A} {B} itu.", dict(
            A=["tutup", "buka", "bawa", "ambil", "bersihkan", "kirim"],
            B=["pintu", "jendela", "tas", "surat", "meja", "kotak"])),
        ("Cuaca hari ini {A}, jadi kami {B}.", dict(
            A=["sangat panas", "dingin", "hujan", "cerah"],
            B=["tinggal di rumah", "pergi ke pantai", "menonton film", "naik taksi"])),
    ],
    num=[
        ("Ada {CARD} orang di kelas ini.", {}), ("Saya membeli {CARD} buku.", {}),
        ("Kereta berangkat pukul {TIME}.", {}),
        ("Rapat itu tanggal {DATE}.", {}),
        ("Harganya {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "id", time_fmt=lambda h, m: f"{h}.{m:02d}",
        time_words=lambda h, m: w(h, "id") + ("" if m == 0 else (" lewat " + w(m, "id") if m < 10 else " " + w(m, "id"))),
        date=_id_date, amt=_id_amt),
)

_VI_MONTH = ["", "một", "hai", "ba", "tư", "năm", "sáu", "bảy", "tám", "chín", "mười", "mười một", "mười hai"]


def vi(n: int) -> str:
    if 2001 <= n <= 2099:
        rest = n - 2000
        return "hai nghìn " + ("không trăm " + w(rest, "vi") if rest >= 10 else "lẻ " + w(rest, "vi"))
    return w(n, "vi")


def _vi_date(rng):
    y, mo, d = pick_date(rng)
    words = f"ngày {w(d, 'vi')} tháng {_VI_MONTH[mo]} năm {vi(y)}"
    return Form(f"ngày {d} tháng {mo} năm {y}", words, words)


def _vi_amt(rng):
    n = rng.choice([rng.randint(1, 99) * 1000, rng.randint(1, 9) * 100000])
    return money_form(f"{n:,}".replace(",", ".") + " đồng", vi(n) + " đồng")


VI = dict(
    voices=["vi", "vi-vn-x-central", "vi-vn-x-south"],
    plain=[
        ("{A} {B} ở {C} {D}.", dict(
            A=["Tôi", "Anh Nam", "Mẹ tôi", "Cô giáo", "Bạn tôi", "Chúng tôi"],
            B=["đọc sách", "ăn trưa", "làm việc", "học bài", "uống cà phê", "chờ xe buýt"],
            C=["nhà", "công ty", "trường", "thư viện", "chợ", "công viên"],
            D=["hôm nay", "ngày mai", "hôm qua", "mỗi ngày", "tối nay"])),
        ("Làm ơn {A} {B} này.", dict(
            A=["đóng", "mở", "mang", "lấy", "gửi"],
            B=["cửa", "cửa sổ", "túi", "thư", "hộp"])),
        ("Hôm nay trời {A}, nên chúng tôi {B}.", dict(
            A=["rất nóng", "lạnh", "mưa", "đẹp"],
            B=["ở nhà", "đi biển", "xem phim", "đi taxi"])),
    ],
    num=[
        ("Lớp này có {CARD} học sinh.", {}), ("Tôi đã mua {CARD} quyển sách.", {}),
        ("Tàu chạy lúc {TIME}.", {}),
        ("Cuộc họp vào {DATE}.", {}),
        ("Giá là {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "vi", time_fmt=lambda h, m: f"{h} giờ" if m == 0 else f"{h} giờ {m}",
        time_words=lambda h, m: w(h, "vi") + " giờ" + ("" if m == 0 else " " + w(m, "vi")),
        date=_vi_date, amt=_vi_amt),
)

_PT_HOUR = ["", "uma", "duas", "três", "quatro", "cinco", "seis", "sete", "oito", "nove", "dez", "onze", "doze"]
_PT_MONTHS = ["", "janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro",
              "outubro", "novembro", "dezembro"]


def _pt_date(rng):
    y, mo, d = pick_date(rng)
    words = f"{w(d, 'pt')} de {_PT_MONTHS[mo]} de {w(y, 'pt')}"
    return Form(f"{d} de {_PT_MONTHS[mo]} de {y}", words, words)


def _pt_amt(rng):
    e, c = rng.randint(2, 99), rng.choice([0, 0, 10, 20, 50, 90, 99])
    words = w(e, "pt") + " euros" + (f" e {w(c, 'pt')} cêntimos" if c else "")
    return money_form(f"{e},{c:02d} €" if c else f"{e} €", words)


PT = dict(
    voices=["pt", "pt-br"],
    plain=[
        ("{A} {B} {C} {D}.", dict(
            A=["A Ana", "O João", "A minha mãe", "O professor", "A nossa vizinha", "O médico"],
            B=["lê um livro", "almoça", "trabalha", "estuda", "bebe café", "espera o autocarro"],
            C=["em casa", "no escritório", "na escola", "na biblioteca", "no parque", "no mercado"],
            D=["hoje", "amanhã", "todos os dias", "à tarde", "de manhã"])),
        ("Por favor, {A} a {B}.", dict(
            A=["feche", "abra", "traga", "limpe", "envie"],
            B=["porta", "janela", "carta", "mesa", "caixa", "mala"])),
        ("Hoje está {A}, por isso vamos {B}.", dict(
            A=["muito calor", "frio", "a chover", "sol"],
            B=["ficar em casa", "à praia", "ao cinema", "de táxi"])),
    ],
    num=[
        ("Há {CARD} alunos na turma.", {}), ("Comprei {CARD} livros.", {}),
        ("O comboio parte às {TIME}.", {}),
        ("A reunião é a {DATE}.", {}),
        ("Custa {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "pt", time_fmt=lambda h, m: f"{h}h{m:02d}" if m else f"{h}h",
        time_words=lambda h, m: _PT_HOUR[h] + (" horas" if m == 0 else " e " + w(m, "pt")),
        date=_pt_date, amt=_pt_amt),
)

_NL_MONTHS = ["", "januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
              "oktober", "november", "december"]


def _nl_date(rng):
    y, mo, d = pick_date(rng)
    words = f"{w(d, 'nl')} {_NL_MONTHS[mo]} {w(y, 'nl')}"
    return Form(f"{d} {_NL_MONTHS[mo]} {y}", words, words)


def _nl_amt(rng):
    e, c = rng.randint(2, 99), rng.choice([0, 0, 10, 20, 50, 95])
    words = w(e, "nl") + " euro" + (f" {w(c, 'nl')}" if c else "")
    return money_form(f"€{e},{c:02d}" if c else f"€{e}", words)


NL = dict(
    voices=["nl"],
    plain=[
        ("{A} {B} {C} {D}.", dict(
            A=["Anna", "Mijn moeder", "De leraar", "Onze buurman", "Peter", "De dokter"],
            B=["werkt", "studeert", "slaapt", "eet", "wacht", "kookt"],
            C=["vandaag", "morgen", "elke dag", "vanmiddag", "vanavond"],
            D=["thuis", "op kantoor", "op school", "in de bibliotheek", "in het park", "op het station"])),
        ("Wil je de {A} {B}?", dict(
            A=["deur", "brief", "tas", "doos", "sleutel", "fiets"],
            B=["openen", "sluiten", "brengen", "pakken", "schoonmaken"])),
        ("Het is vandaag {A}, dus we gaan {B}.", dict(
            A=["erg warm", "koud", "regenachtig", "zonnig"],
            B=["naar het strand", "naar de bioscoop", "met de taxi", "naar huis"])),
    ],
    num=[
        ("Er zijn {CARD} leerlingen in de klas.", {}), ("Ik heb {CARD} boeken gekocht.", {}),
        ("De trein vertrekt om {TIME}.", {}),
        ("De vergadering is op {DATE}.", {}),
        ("Het kost {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "nl", time_fmt=lambda h, m: f"{h}.{m:02d} uur",
        time_words=lambda h, m: w(h, "nl") + " uur" + ("" if m == 0 else " " + w(m, "nl")),
        date=_nl_date, amt=_nl_amt),
)

_PL_HOUR = ["", "pierwszej", "drugiej", "trzeciej", "czwartej", "piątej", "szóstej", "siódmej", "ósmej",
            "dziewiątej", "dziesiątej", "jedenastej", "dwunastej"]


def _pl_amt(rng):
    while True:
        z = rng.randint(5, 99)
        if 10 <= z <= 19 or z % 10 in (0, 5, 6, 7, 8, 9):
            break
    g = rng.choice([0, 0, 10, 20, 50, 90, 99])
    words = w(z, "pl") + " złotych" + (f" {w(g, 'pl')} groszy" if g else "")
    return money_form(f"{z},{g:02d} zł" if g else f"{z} zł", words)


PL = dict(
    voices=["pl"],
    plain=[
        ("{A} {B} {C} {D}.", dict(
            A=["Anna", "Moja mama", "Nauczyciel", "Nasz sąsiad", "Piotr", "Lekarz"],
            B=["czyta książkę", "pracuje", "je obiad", "pije kawę", "czeka na autobus", "odpoczywa"],
            C=["w domu", "w biurze", "w szkole", "w bibliotece", "w parku", "na dworcu"],
            D=["dzisiaj", "jutro", "codziennie", "po południu", "wieczorem"])),
        ("Proszę {A} {B}.", dict(
            A=["zamknąć", "otworzyć", "przynieść", "wysłać"],
            B=["drzwi", "okno", "list", "torbę", "pudełko"])),
        ("Dzisiaj jest {A}, więc {B}.", dict(
            A=["bardzo gorąco", "zimno", "pochmurno", "słonecznie"],
            B=["zostaniemy w domu", "pójdziemy do kina", "pojedziemy nad morze", "weźmiemy taksówkę"])),
    ],
    num=[
        ("Mieszkam w pokoju numer {CARD}.", {}), ("Autobus numer {CARD} jedzie do centrum.", {}),
        ("Pociąg odjeżdża o {TIME}.", {}),
        ("To kosztuje {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "pl", time_fmt=lambda h, m: f"{h}:{m:02d}",
        time_words=lambda h, m: _PL_HOUR[h] + ("" if m == 0 else (" zero " if m < 10 else " ") + w(m, "pl")),
        amt=_pl_amt),
)

_SV_MONTHS = ["", "januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september",
              "oktober", "november", "december"]


def _sv_date(rng):
    y, mo, d = pick_date(rng)
    words = f"den {w(d, 'sv', to='ordinal')} {_SV_MONTHS[mo]} {w(y, 'sv')}"
    return Form(f"den {d} {_SV_MONTHS[mo]} {y}", words, words)


def _sv_amt(rng):
    k, o = rng.randint(2, 99), rng.choice([0, 0, 10, 20, 50, 90])
    words = w(k, "sv") + " kronor" + (f" och {w(o, 'sv')} öre" if o else "")
    return money_form(f"{k},{o:02d} kr" if o else f"{k} kr", words)


SV = dict(
    voices=["sv"],
    plain=[
        ("{A} {B} {C} {D}.", dict(
            A=["Anna", "Min mamma", "Läraren", "Vår granne", "Erik", "Doktorn"],
            B=["läser en bok", "arbetar", "äter lunch", "dricker kaffe", "väntar på bussen", "vilar"],
            C=["hemma", "på kontoret", "i skolan", "på biblioteket", "i parken", "på stationen"],
            D=["idag", "i morgon", "varje dag", "i eftermiddag", "i kväll"])),
        ("Kan du {A} {B}?", dict(
            A=["stänga", "öppna", "hämta", "skicka"],
            B=["dörren", "fönstret", "brevet", "väskan", "lådan"])),
        ("Idag är det {A}, så vi {B}.", dict(
            A=["varmt", "kallt", "regnigt", "soligt"],
            B=["stannar hemma", "åker till stranden", "går på bio", "tar en taxi"])),
    ],
    num=[
        ("Det finns {CARD} elever i klassen.", {}), ("Jag köpte {CARD} böcker.", {}),
        ("Tåget går klockan {TIME}.", {}),
        ("Mötet är {DATE}.", {}),
        ("Det kostar {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "sv", time_fmt=lambda h, m: f"{h}.{m:02d}" if m else f"{h}",
        time_words=lambda h, m: w(h, "sv") + ("" if m == 0 else " " + w(m, "sv")),
        date=_sv_date, amt=_sv_amt),
)


def _fi_amt(rng):
    e, c = rng.randint(2, 99), rng.choice([0, 0, 10, 20, 50, 90])
    words = w(e, "fi") + " euroa" + (f" {w(c, 'fi')} senttiä" if c else "")
    return money_form(f"{e},{c:02d} €" if c else f"{e} €", words)


FI = dict(
    voices=["fi"],
    plain=[
        ("{A} {B} {C} {D}.", dict(
            A=["Anna", "Äitini", "Opettaja", "Naapurimme", "Mikko", "Lääkäri"],
            B=["lukee kirjaa", "tekee töitä", "syö lounasta", "juo kahvia", "odottaa bussia", "lepää"],
            C=["kotona", "toimistolla", "koulussa", "kirjastossa", "puistossa", "asemalla"],
            D=["tänään", "huomenna", "joka päivä", "iltapäivällä", "illalla"])),
        ("Voisitko {A} {B}?", dict(
            A=["sulkea", "avata", "tuoda", "lähettää"],
            B=["oven", "ikkunan", "kirjeen", "laukun", "laatikon"])),
        ("Tänään on {A}, joten {B}.", dict(
            A=["kuuma", "kylmä", "sateista", "aurinkoista"],
            B=["jäämme kotiin", "menemme rannalle", "menemme elokuviin", "otamme taksin"])),
    ],
    num=[
        ("Huoneen numero on {CARD}.", {}), ("Bussi numero {CARD} lähtee pian.", {}),
        ("Juna lähtee kello {TIME}.", {}),
        ("Muutimme tänne vuonna {YEAR}.", {}),
        ("Se maksaa {AMT}.", {}),
    ],
    numbers=simple_numbers(
        "fi", time_fmt=lambda h, m: f"{h}.{m:02d}" if m else f"{h}",
        time_words=lambda h, m: w(h, "fi") + ("" if m == 0 else " " + w(m, "fi")),
        year=lambda y: w(y, "fi"), amt=_fi_amt),
)

LANGS = {"zh": ZH, "en": EN, "yue": YUE, "ja": JA, "ko": KO, "id": ID, "vi": VI, "pt": PT, "nl": NL,
         "pl": PL, "sv": SV, "fi": FI}

# --------------------------------------------------------------------------------------- sentences

_SLOT = re.compile(r"\{([A-Z]+)\}")


def _zh_say(text: str) -> str:
    from pypinyin import Style, lazy_pinyin
    out = []
    for piece in lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors="default"):
        piece = piece.strip()
        if not piece:
            continue
        if all(ch in "，。、！？：；%" for ch in piece):
            out.append(",")
            continue
        out.append(piece)
    return " ".join(out).replace(" ,", ",")


def _fill(lang: str, template: str, slots: dict, rng: random.Random) -> tuple[Form, bool]:
    spec = LANGS[lang]
    surface, reading = split_ja(template) if lang == "ja" else (template, template)
    values: dict[str, Form] = {}
    numeric = False
    for name in _SLOT.findall(surface):
        if name in values:
            continue
        if name in slots:
            s, r = split_ja(rng.choice(slots[name])) if lang == "ja" else (rng.choice(slots[name]),) * 2
            values[name] = Form(s, s, r)
        else:
            values[name] = spec["numbers"][name](rng)
            numeric = True

    def sub(t, attr):
        return _SLOT.sub(lambda m: getattr(values[m.group(1)], attr), t)

    itn, noitn = sub(surface, "itn"), sub(surface, "noitn")
    if lang == "ja":
        say = sub(reading, "say")
    elif lang == "zh":
        say = _zh_say(noitn)
    else:
        say = noitn
    return Form(itn, noitn, say), numeric


def n_combinations(slots: dict) -> int:
    total = 1
    for values in slots.values():
        total *= len(values)
    return total


# between the number phrases of one training clip, and at its end
_LIST_SEP = {"zh": "，", "yue": "，", "ja": "、"}
_STOP = {"zh": "。", "yue": "。", "ja": "。"}


def number_phrase(lang: str, rng: random.Random, max_slots: int = 2) -> tuple[Form, str]:
    """One or two number slots said on their own (``$57.50.``, ``3 juni 1994, 12 mei 2001.``): training
    data only. In a carrier sentence the number is a third of the clip or less; here it is nearly
    all of it, so a step hears several times more number words. Only the slot kinds that the
    language's own sentences use. Kind: ``phrase-`` and the slot names (``phrase-amt+date``)."""
    spec = LANGS[lang]
    names = sorted({n for template, _ in spec["num"] for n in _SLOT.findall(template)})
    # two slots are of one kind: "sju trettio" is a time, "sju, trettio" two numbers, and a
    # mix of kinds in one clip would blur that line
    picked = [rng.choice(names)] * rng.randint(1, max_slots)
    parts = [_fill(lang, "{%s}" % n, {}, rng)[0] for n in picked]
    sep, stop = _LIST_SEP.get(lang, ", "), _STOP.get(lang, ".")
    itn = sep.join(p.itn for p in parts) + stop
    noitn = sep.join(p.noitn for p in parts) + stop
    # Mandarin is read from its pinyin, where an ASCII comma makes the pause
    say = ", ".join(p.say for p in parts) if lang == "zh" else sep.join(p.say for p in parts) + stop
    return Form(itn, noitn, say), "phrase-" + "+".join(sorted({n.lower() for n in picked}))


def make_sentence(lang: str, rng: random.Random, numeric: bool, test: bool = False) -> tuple[Form, str]:
    """One sentence of `lang`; numeric picks a number template. Returns (form, kind)."""
    spec = LANGS[lang]
    if numeric:
        template, slots = rng.choice(spec["num"])
        form, _ = _fill(lang, template, slots, rng)
        kind = "+".join(sorted(set(_SLOT.findall(template)) - set(slots))).lower()
        return form, kind
    plain = spec["plain"]
    if test:  # held-out plain sentences come from the templates with many combinations
        plain = [p for p in plain if n_combinations(p[1]) >= 100] or plain
    template, slots = rng.choice(plain)
    form, _ = _fill(lang, template, slots, rng)
    return form, "plain"
